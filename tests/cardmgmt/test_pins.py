from collections import Counter

from cardmgmt.pins import PIN_DIGITS, generate, is_well_formed, pin_hash


def test_generate_shape_and_uniqueness():
    pins = generate(50_000)
    assert len(pins) == 50_000 and len(set(pins)) == 50_000
    assert all(len(p) == PIN_DIGITS and p.isdigit() for p in pins)


def test_digits_are_roughly_uniform():
    counts = Counter("".join(generate(20_000)))
    expected = 20_000 * PIN_DIGITS / 10
    assert all(abs(counts[d] - expected) < expected * 0.03 for d in "0123456789")


def test_hash_is_keyed():
    assert pin_hash(b"k1", "1" * 18) != pin_hash(b"k2", "1" * 18)
    assert len(pin_hash(b"k1", "1" * 18)) == 32


def test_well_formed():
    assert is_well_formed("0" * 18)
    assert not is_well_formed("0" * 17) and not is_well_formed("a" * 18) and not is_well_formed("٣" * 18)
