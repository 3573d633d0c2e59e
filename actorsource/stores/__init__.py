"""Event stores: the storage contract and its implementations (memory, SQLite, PostgreSQL).

Stores work on raw records only (type names and JSON-ready dicts) and never see domain classes.
"""
