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
