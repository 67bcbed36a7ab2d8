"""Bulk sealing (Transaction.add_accounts): rows MACed in one core call per table pass
``audit verify`` and read back."""
import pytest


def test_add_accounts_rows_pass_audit_verify(tmp_path):
    from otpfast.store import SQLiteStore, new_key
    store = SQLiteStore(str(tmp_path / "s.db"), new_key(), head_path=str(tmp_path / "h"),
                        create=True)
    try:
        params = {"algorithm": "sha1", "authorities": [], "digits": 6, "lockout": 10,
                  "period": 30}
        with store.transaction() as tx:
            serials = tx.add_accounts([(f"u{n}", "totp", params, {"key": "00" * 20})
                                       for n in range(50)], 1_700_000_000.5)
            tx.audit(1_700_000_000.5, "admin", "-", "-", "cli", "accounts-added:50")
        assert len(set(serials)) == 50
        assert store.account("u7").material == {"key": "00" * 20}
        assert [t.serial for t in store.tokens("u7")] == [serials[7]]
        assert store.verify_audit().ok
        with pytest.raises(Exception, match="exist already"), store.transaction() as tx:
            tx.add_accounts([("u3", "totp", params, {"key": "00" * 20})], 1.0)
        assert len(store.accounts()) == 50
    finally:
        store.close()
