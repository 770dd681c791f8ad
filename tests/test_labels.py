import numpy as np
import pytest

from irmas_lib.labels import CODES, INSTRUMENTS, N_CLASSES, class_index, decode_labels, encode_labels, instrument_name


def test_eleven_classes_in_irmas_order():
    assert CODES == ("cel", "cla", "flu", "gac", "gel", "org", "pia", "sax", "tru", "vio", "voi")
    assert N_CLASSES == 11
    assert instrument_name("gac") == "acoustic guitar"
    assert instrument_name("voi") == "voice"


def test_general_midi_programs_are_distinct_and_valid():
    programs = [p for instrument in INSTRUMENTS for p in instrument.gm_programs]
    assert len(programs) == len(set(programs))
    assert all(0 <= p < 128 for p in programs)
    assert INSTRUMENTS[class_index("cel")].gm_programs == (42,)


def test_encode_decode_round_trip():
    multi_hot = encode_labels(["voi", "pia"])
    assert multi_hot.dtype == np.float32 and multi_hot.shape == (11,)
    assert multi_hot.nonzero()[0].tolist() == [6, 10]
    assert decode_labels(multi_hot) == ["pia", "voi"]


def test_decode_applies_strictly_greater_threshold():
    probabilities = np.full(11, 0.6)
    probabilities[0] = 0.61
    assert decode_labels(probabilities, threshold=0.6) == ["cel"]


def test_unknown_code_is_named():
    with pytest.raises(ValueError, match="'xyz'"):
        encode_labels(["xyz"])


def test_cooccurrence_counts_pairs_and_diagonal():
    from irmas_lib.labels import cooccurrence

    targets = np.stack([encode_labels(["pia", "voi"]), encode_labels(["voi"]), encode_labels(["pia", "voi", "gel"])])
    together = cooccurrence(targets)
    pia, voi, gel = class_index("pia"), class_index("voi"), class_index("gel")
    assert together[voi, voi] == 3 and together[pia, voi] == 2 and together[voi, pia] == 2
    assert together[gel, pia] == 1 and together[0, 0] == 0
