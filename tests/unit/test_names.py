"""Names as bytes, text and length-limited derived names."""

from __future__ import annotations

import os
import unicodedata

import pytest

from glimpsed.names import NAME_MAX, RESERVED_BYTES, display, fit_name, fit_stem, from_raw, raw


def test_raw_round_trips_non_utf8_names():
    name = os.fsdecode(b"caf\xe9.jpg")
    assert raw(name) == b"caf\xe9.jpg" and from_raw(raw(name)).name == name
    assert display(name) == "caf\\xe9.jpg" and display(b"caf\xe9.jpg") == "caf\\xe9.jpg"
    display(name).encode("utf-8")  # valid text for SQLite and JSON


def test_display_never_raises():
    assert display("\ud800x") == "\\ud800x"  # a surrogate no filesystem byte made


@pytest.mark.parametrize("stem", ["x" * 300, "é" * 200, "日本" * 100])
def test_fit_stem_keeps_names_under_the_limit_and_apart(stem):
    fitted = fit_stem(stem)
    assert len(fitted.encode()) <= NAME_MAX - RESERVED_BYTES and fitted.encode().decode() == fitted
    assert fit_stem(stem + "a") != fit_stem(stem + "b")  # a hash of the whole stem keeps them apart


def test_fit_stem_cleans_control_characters_and_normalises():
    assert fit_stem("line\nbreak") == "line_break"
    assert fit_stem(unicodedata.normalize("NFD", "café")) == unicodedata.normalize("NFC", "café")
    assert fit_stem("") == "photo" and fit_stem("plain") == "plain"


def test_fit_name_keeps_a_name_that_fits_byte_for_byte():
    name = os.fsdecode(b"caf\xe9.jpg")
    assert fit_name(name, 11) == name
    long = "y" * 250 + ".jpeg"
    short = fit_name(long, 11)
    assert short.endswith(".jpeg") and len(short.encode()) + 11 <= NAME_MAX
