"""Bulk sealing (Transaction.add_accounts): RowSealer gives row_mac's MAC."""
import hashlib

import pytest

from otpfast.store.rows import RowSealer, row_mac

ROW = ("alice", "totp", '{"digits":6}', "active", b"\x00\x01enc", 0, -1, None, 0, None,
       1_700_000_000.25, 0, 0, 0)


@pytest.mark.parametrize("varying", [(0,), (0, 4), (4,), (1, 13), (0, 1, 2)])
def test_row_sealer_matches_row_mac(varying):
    mac = hashlib.blake2b(key=b"k" * 32, digest_size=32)
    template = tuple(None if i in varying else v for i, v in enumerate(ROW))
    seal = RowSealer(mac, "a", template, varying, 17)
    for value in ("bob", "caf\u00e9", b"\xff", 12345678901, None):
        row = list(ROW)
        row[varying[0]] = value
        assert seal(*(row[i] for i in varying)) == row_mac(mac, "a", row, 17)
    assert seal(*(ROW[i] for i in varying)) != row_mac(mac, "a", ROW, 18)


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
