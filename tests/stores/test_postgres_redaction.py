"""A DSN's password never reaches a message, whatever the shape of the DSN.

These tests need asyncpg but no server: the DSNs are malformed or point nowhere.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorsource import PostgresEventStore, StoreError
from actorsource.stores.postgres import drop_schema, redact_dsn, server_facts

#: a password whose words appear nowhere else in the DSNs or the messages below
SECRET = "Zq7Xw9"


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://app:s3cretPW@db:5432/bank", "postgresql://app:***@db:5432/bank"),
        ("postgresql://app:s3cretPW@[::1/db", "postgresql://app:***@[::1/db"),
        ("postgresql://app:s3c/retPW@db/bank", "postgresql://app:***@db/bank"),
        ("postgresql://app:s3c?retPW@db/bank", "postgresql://app:***@db/bank"),
        ("postgresql://app:s3c#retPW@db/bank", "postgresql://app:***@db/bank"),
        ("postgresql://app:s3c@retPW@db/bank", "postgresql://app:***@db/bank"),
        ("postgresql://app:s3c%2FretPW@db/bank", "postgresql://app:***@db/bank"),
        ("postgresql://app@db/bank?password=s3cretPW", "postgresql://app@db/bank?password=***"),
        (
            "postgresql://app@db/bank?sslmode=require&Password=s3c@ret&PW",
            "postgresql://app@db/bank?sslmode=require&Password=***",
        ),
        (
            "postgresql://app@db/bank?sslpassword=s3cretPW",
            "postgresql://app@db/bank?sslpassword=***",
        ),
        ("host=db user=app password=s3cretPW", "host=db user=app password=***"),
        ("host=db password = 's3c ret' dbname=bank", "host=db password = ***"),
        ("app:s3cretPW@db", "app:***@db"),
        ("postgresql://app:s3c?password=retPW@db/bank", "postgresql://app:***"),
        # nothing to hide: shown as given
        (
            "postgresql:///bank?host=/var/run/postgresql",
            "postgresql:///bank?host=/var/run/postgresql",
        ),
        ("postgresql://app@[::1]:5432/bank", "postgresql://app@[::1]:5432/bank"),
    ],
)
def test_redact_dsn_hides_the_password_of_well_formed_and_malformed_dsns(
    dsn: str, redacted: str
) -> None:
    assert redact_dsn(dsn) == redacted


# every character that ends a part of a URI or a key=value DSN, quotes, escapes, percent signs
_SPECIAL = "/?#@:[]%&=;, '\"\\\t*"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_OTHER = "abcdefghijklmnopqrstuvwxyz0123456789" + _SPECIAL

#: passwords that alternate upper-case letters with anything: the DSN around them is lower-case,
#: so any piece of a password longer than one character that leaks shows an upper-case letter
_passwords = st.lists(
    st.tuples(st.sampled_from(_UPPER), st.sampled_from(_OTHER)), min_size=1, max_size=12
).map(lambda pairs: "".join(a + b for a, b in pairs))

_TEMPLATES = [
    "postgresql://app:{}@db.internal:5432/bank?sslmode=require",
    "postgresql://app:{}@[::1/bank",
    "postgres://app@db.internal/bank?sslmode=require&password={}",
    "postgresql://app@db.internal/bank?password={}&sslmode=require",
    "host=db.internal port=5432 user=app password={} dbname=bank",
]


@given(password=_passwords, template=st.sampled_from(_TEMPLATES))
def test_no_piece_of_a_password_survives_redaction(password: str, template: str) -> None:
    dsn = template.format(password)

    redacted = redact_dsn(dsn)

    assert not re.search("[A-Z]", redacted), redacted
    assert "***" in redacted


@given(
    password=st.text(st.sampled_from(_UPPER + _OTHER.replace("=", "")), min_size=1),
    template=st.sampled_from(_TEMPLATES[:2]),
)
def test_a_redacted_user_and_password_dsn_says_nothing_about_the_password(
    password: str, template: str
) -> None:
    assert redact_dsn(template.format(password)) == redact_dsn(template.format("x"))


# DSNs that fail fast: unparsable, or a refused port on this machine
_MALFORMED = [
    f"postgresql://app:{SECRET}@[::1/bank",
    f"postgresql://app:{SECRET[:3]}/{SECRET[3:]}@127.0.0.1:1/bank",  # the port is 'Zq7'
    f"postgresql://app:{SECRET[:3]}?{SECRET[3:]}@127.0.0.1:1/bank",  # a query of 'Xw9@...'
    f"postgresql://app:{SECRET[:3]}#{SECRET[3:]}@127.0.0.1:1/bank",
    f"postgresql://app@127.0.0.1:1/bank?password={SECRET[:3]}&{SECRET[3:]}",
    f"postgresql://app:{SECRET}@127.0.0.1:notaport/bank",
]


def _assert_no_secret(text: str) -> None:
    for piece in (SECRET, SECRET[:3], SECRET[3:]):
        assert piece not in text, text


@pytest.mark.parametrize("dsn", _MALFORMED)
async def test_the_store_error_of_a_malformed_dsn_holds_no_piece_of_the_password(
    dsn: str,
) -> None:
    pytest.importorskip("asyncpg")
    store = PostgresEventStore(dsn, schema="x", connect_timeout=5)
    with pytest.raises(StoreError) as caught:
        await store.open()

    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://app")
    _assert_no_secret(message)
    _assert_no_secret(repr(store))


@pytest.mark.parametrize("dsn", _MALFORMED[:3])
async def test_the_tools_errors_of_a_malformed_dsn_hold_no_piece_of_the_password(
    dsn: str,
) -> None:
    pytest.importorskip("asyncpg")
    with pytest.raises(StoreError) as facts:
        await server_facts(dsn)
    with pytest.raises(StoreError) as dropping:
        await drop_schema(dsn, "x")

    _assert_no_secret(str(facts.value))
    _assert_no_secret(str(dropping.value))
