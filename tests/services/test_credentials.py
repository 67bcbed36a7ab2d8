"""The challenge-response of services.credentials (no store, no network)."""
import dataclasses
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from otpfast.errors import InvalidParameter
from otpfast.services import credentials

BINDING = hashlib.sha256(b"server certificate").digest()


def exchange(**changes):
    base = credentials.Exchange(credentials.CLIENT, "phone", b"c" * 32, b"s" * 32, BINDING)
    return dataclasses.replace(base, **changes)


def test_credentials_proof_round_trip_and_no_credential_in_it():
    credential = credentials.new_credential()
    proof, key = credentials.prove(credential + "\n", exchange())
    assert len(proof) == 43 and credential.encode() not in proof
    assert credentials.check_proof(proof, credentials.credential_hash(credential), exchange()) == key
    assert credentials.server_signature(key) != key


@pytest.mark.parametrize("field,value", [
    ("kind", credentials.AUTHORITY), ("principal", "phone2"), ("client_nonce", b"C" * 32),
    ("server_nonce", b"S" * 32), ("binding", hashlib.sha256(b"relay certificate").digest())])
def test_credentials_proof_bound_to_every_field(field, value):
    credential = credentials.new_credential()
    proof, key = credentials.prove(credential, exchange())
    other = exchange(**{field: value})
    assert credentials.check_proof(proof, credentials.credential_hash(credential), other) is None
    assert credentials.prove(credential, other)[1] != key


def test_credentials_unknown_principal_never_authenticates():
    credential = credentials.new_credential()
    proof, _ = credentials.prove(credential, exchange())
    assert credentials.check_proof(proof, None, exchange()) is None


def test_credentials_oversize_credential_is_a_named_error():
    with pytest.raises(InvalidParameter) as info:
        credentials.prove("x" * 256, exchange())
    assert info.value.field == "credential"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.none(), st.text(max_size=5)),
       st.binary(min_size=32, max_size=32), st.text(max_size=20), st.binary(max_size=64))
def test_credentials_fuzz_check_proof_never_raises_never_accepts(proof, stored, principal, nonce):
    ex = exchange(principal=principal, client_nonce=nonce)
    assert credentials.check_proof(proof, stored, ex) is None
