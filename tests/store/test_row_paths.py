"""The verification hot paths of the row code equal their generic forms."""
import dataclasses

from otpfast.store.base import AccountRecord
from otpfast.store.common import MOVED_COLUMNS, moved_record


def test_moved_record_is_replace_of_the_moved_columns():
    fields = [field.name for field in dataclasses.fields(AccountRecord)]
    old = AccountRecord(**{name: f"old-{name}" for name in fields})
    new = AccountRecord(**{name: f"new-{name}" for name in fields})
    expected = dataclasses.replace(old, **{name: getattr(new, name) for name in MOVED_COLUMNS},
                                   row=("stored",))
    got = moved_record(old, new, ("stored",))
    assert [getattr(got, name) for name in fields] == [getattr(expected, name) for name in fields]


def test_issued_id_reused_after_purge_still_verifies(store):
    """SQLite reuses the largest rowid once its row is deleted: an OTP issued after the
    previous one expired and was purged may get its id. That is a new row (a newer
    version), not a rollback of the one this process marked used."""
    from otpfast.services import masking
    from otpfast.services.admin import Admin
    from otpfast.services.distribution import Distribution, VerifyItem

    clock = [1_700_000_000.0]
    admin = Admin(store, clock=lambda: clock[0])
    dist = Distribution(store, clock=lambda: clock[0])
    admin.add_account("alice", "hotp", ttl=60)
    credential = admin.add_client("dev", account="alice")

    def otp():
        info = dist.login("dev", credential)
        issued = dist.request(info, "alice")
        return masking.unmask(info.session_key, "alice", issued.nonce, issued.masked,
                              issued.expires_at_ms)

    first = otp()
    assert dist.verify_many([VerifyItem("alice", first, "t")]) == [True]
    clock[0] += 120                  # expired: the next request purges it
    second = otp()
    assert dist.verify_many([VerifyItem("alice", second, "t")]) == [True]
    assert dist.verify_many([VerifyItem("alice", second, "t")]) == [False]
    assert store.verify_audit().ok
