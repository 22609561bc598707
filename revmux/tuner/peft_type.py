"""Adds REVMUX to PEFT's closed PeftType enum, so configs and checkpoints can name it."""

from __future__ import annotations

from peft.utils import PeftType

NAME = "REVMUX"


def register_peft_type() -> PeftType:
    """Return ``PeftType.REVMUX``, adding the member to the enum on first use (idempotent)."""
    if NAME in PeftType._member_map_:
        return PeftType._member_map_[NAME]
    member = str.__new__(PeftType, NAME)
    member._name_ = NAME
    member._value_ = NAME
    member._sort_order_ = len(PeftType._member_names_)
    # EnumType.__setattr__ refuses new members and Python >= 3.12 no longer finds them via __getattr__.
    type.__setattr__(PeftType, NAME, member)
    PeftType._member_map_[NAME] = member
    PeftType._value2member_map_[NAME] = member
    PeftType._member_names_.append(NAME)
    return member
