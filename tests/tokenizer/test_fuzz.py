"""Hardening: a fast slice of the mutation fuzzer (bench/fuzz.py), and one regression test per finding of the
fuzzing pass (huge delta times, writer delta times above 0x0FFFFFFF, small files declaring huge work, tempo 0,
a 255/128 time signature), plus the limits they led to."""

import io
import subprocess
import sys

import mido
import numpy as np
import pytest

from bench.fuzz import fuzz, make_input, message_kind, report, run_one, source_files
from tests.tokenizer.conftest import MM, ROOT, conductor, midi_bytes, note, prog
from tokenizer import MidiError, Score, decode, encode, load_midi, make_notes, to_midi_bytes
from tokenizer import vocab as V
from tokenizer.score import MAX_DELTA, MAX_FILE_BPM, MAX_PARTS, MAX_STEPS, MAX_TRACKS, MIN_FILE_BPM

# every refusal: under 2 s and 300 MB.  The child is forked from this (large) test process, so what the input
# added to it is checked, against 300 MB less a lean process (python + numpy + symusic + mido, about 50 MB).
FAST_S, ADDED_MB = 2.0, 250


def piano(*events, tpq=480, bpm=120, ts=(4, 4), extra=()):
    """A one-track file: conductor events, a piano program, `events` (absolute tick, message) pairs."""
    return midi_bytes([conductor(bpm, ts) + list(extra) + [prog(0, 0)] + list(events)], tpq=tpq)


def refused_fast(data: bytes, words: str) -> dict:
    """The roundtrip path refuses `data` with a MidiError naming `words`, fast and small, in a child process."""
    res = run_one(data, timeout=30)
    assert res["outcome"] == "refused", res
    assert words in res["message"], res["message"]
    assert res["seconds"] < FAST_S and res["added_mb"] < ADDED_MB, res
    return res


# ---- the fuzzer -------------------------------------------------------------------------------------
def test_fuzz_slice_has_no_crash_hang_or_unreadable_output():
    s = fuzz(300, seed=20240, jobs=1, timeout=30)
    text = report(s, 20240, 1, 30)
    assert s.inputs == 300 and s.n_failures == 0, text
    assert s.outcomes["accepted"] > 0 and s.outcomes["refused"] > 0, text
    assert s.refusal_added_mb < ADDED_MB, text
    assert len(s.mutations) >= 12, text  # (nearly) every mutation kind ran


def test_fuzz_inputs_are_seeded():
    sources = [p.read_bytes() for p in source_files()[:5]]
    assert [make_input(sources, 3, i) for i in range(20)] == [make_input(sources, 3, i) for i in range(20)]
    assert make_input(sources, 3, 0) != make_input(sources, 4, 0)


def test_fuzz_cli_prints_the_figures():
    r = subprocess.run([sys.executable, "-m", "bench.fuzz", "--n", "12", "--seed", "5"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for label in ("inputs", "accepted", "refused", "crashes", "hangs", "unreadable outputs", "slowest refusal",
                  "peak memory"):
        assert f"\n{label} " in r.stdout, r.stdout


def test_fuzz_counts_a_crash_and_a_hang(monkeypatch):
    import bench.fuzz as F

    def broken(src, out):
        data = open(src, "rb").read()
        if data[-1] % 2:
            raise KeyError("boom")
        while True:
            pass

    monkeypatch.setattr(F, "roundtrip", broken)
    crash = run_one(b"MThd1", timeout=5)
    hang = run_one(b"MThd2", timeout=0.5)
    assert crash["outcome"] == "crash" and "KeyError" in crash["traceback"]
    assert hang["outcome"] == "hang"


def test_message_kind_drops_numbers_and_advice():
    assert message_kind("the file declares 65,535 tracks; the limit is 1,024: merge tracks and re-export it") \
        == "the file declares N tracks"


# ---- finding 1: huge delta times wrapped onsets past int32 (a traceback; 'notes must be sorted') ------
def test_delta_times_past_what_a_midi_time_holds_are_refused(tmp_path):
    big = 0x0FFFFFFF  # the largest delta time; nine of them pass 2**31 ticks
    markers = [(k * big, MM("marker", text=str(k))) for k in range(1, 9)]
    data = piano(*note(0, 60, 0, 480), *note(0, 62, 9 * big, 9 * big + 480), extra=markers)
    refused_fast(data, "add up to 2,415,919,095 ticks")
    src = tmp_path / "huge.mid"
    src.write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "tokenizer", "roundtrip", src, tmp_path / "out.mid"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: the delta times of track 1 add up to") and "re-export" in r.stderr


def test_notes_past_the_longest_piece_are_refused_not_cut():
    last = MAX_STEPS * 60  # ticks at 480 per quarter
    refused_fast(piano(*note(0, 60, 0, 480), *note(0, 62, last, last + 480)),
                 f"a note starts at step {MAX_STEPS:,} (bar 4,097), past the limit of {MAX_STEPS:,} steps")
    ok = load_midi(piano(*note(0, 60, 0, 480), *note(0, 62, last - 60, last)))
    assert ok.notes["onset"].max() == MAX_STEPS - 1


def test_note_fields_cannot_wrap():
    with pytest.raises(ValueError, match="onset"):
        make_notes([2**31 + 5], [4], 0, 0, 60)  # used to wrap to a negative onset
    with pytest.raises(ValueError, match="onset"):
        Score(make_notes([MAX_STEPS], [4], 0, 0, 60))
    with pytest.raises(ValueError, match="pitch"):
        make_notes([0], [4], 0, 0, 200)
    assert make_notes([0], [2**40], 0, 0, 60)["duration"].tolist() == [V.MAX_DURATION]  # clipped, not wrapped
    raw = np.zeros(1, Score().notes.dtype)
    raw["onset"] = -3
    with pytest.raises(ValueError, match="onset -3"):
        Score(raw)


def test_tokens_past_the_longest_piece_do_not_decode():
    rest = [V.SHIFT_OFFSET + V.MAX_SHIFT, V.DURVEL_REST, V.GROUPPITCH_REST]
    last = [V.durvel_token(4, 3), V.grouppitch_token(0, 60), V.END]
    n_rest = MAX_STEPS // V.MAX_SHIFT
    with pytest.raises(ValueError, match="outside 0..131,071"):
        decode([V.START, V.DRUMS_OFF] + rest * n_rest + [V.shift_token(0)] + last)
    ok = decode([V.START, V.DRUMS_OFF] + rest * (n_rest - 1) + [V.shift_token(127)] + last)
    assert ok.notes["onset"].tolist() == [MAX_STEPS - 1]


# ---- finding 2: the writer wrote delta times above 0x0FFFFFFF, which our reader refused ---------------
def test_the_longest_score_writes_delta_times_midi_can_hold():
    score = Score(make_notes([0, MAX_STEPS - 1], [4, V.MAX_DURATION], 3, [0, 11], [60, 36]), length=MAX_STEPS)
    data = to_midi_bytes(score)
    mf = mido.MidiFile(file=io.BytesIO(data))
    assert max(m.time for tr in mf.tracks for m in tr) <= MAX_DELTA
    back = load_midi(data)
    assert np.array_equal(back.notes, score.notes)
    assert np.array_equal(decode(encode(back)).notes, score.notes)


def test_a_score_that_cannot_be_written_cannot_be_made():
    with pytest.raises(ValueError, match="length"):
        Score(make_notes([0], [4], 3, 0, 60), length=MAX_STEPS + 1)
    with pytest.raises(ValueError, match="tempo"):
        Score(bpm=0.0)
    with pytest.raises(ValueError, match="time signature"):
        Score(time_signature=(255, 128))


def test_onsets_past_the_writer_limit_used_to_be_accepted():
    # one delta of 0x0FFFFFFF ticks at 96 per quarter: the onset (22,369,621 steps) fit int32, but its written
    # delta (x 60 ticks per step) did not fit MIDI, and the written file did not read back
    refused_fast(piano(*note(0, 60, MAX_DELTA, MAX_DELTA + 96), tpq=96), "past the limit of 131,072 steps")


# ---- finding 3: a small file declaring huge work took 7.5 s and 1.23 GB before it was refused ----------
def test_huge_gaps_at_one_tick_per_quarter_are_refused_fast():
    # 1 tick per quarter: each gap of 2**26 ticks is 2**29 steps (millions of rest triples before the fix)
    data = piano(*[e for k in range(4) for e in note(0, 60 + k, k * 2**26, k * 2**26 + 1)], tpq=1)
    refused_fast(data, "past the limit of 131,072 steps")


def test_declared_track_counts_are_checked_first():
    good = piano(*note(0, 60, 0, 480))
    refused_fast(good[:10] + b"\xff\xff" + good[12:], "declares 65,535 tracks; the limit is 1,024")
    refused_fast(good[:10] + b"\x00\x03" + good[12:], "declares 3 tracks but the file holds only 1")
    refused_fast(good[:10] + b"\x00\x30" + good[12:], "declares 48 tracks but 53 bytes hold at most 4")
    chunk = good[14:]
    many = good[:10] + (MAX_TRACKS + 1).to_bytes(2, "big") + good[12:14] + chunk * (MAX_TRACKS + 1)
    refused_fast(many, "the limit is 1,024")
    assert len(load_midi(good[:10] + MAX_TRACKS.to_bytes(2, "big") + good[12:14] + chunk * MAX_TRACKS).notes) == 1


def test_chunk_and_meta_lengths_are_checked_before_parsing():
    good = piano(*note(0, 60, 0, 480))
    refused_fast(good[:18] + b"\x7f\xff\xff\xff" + good[22:], "chunk 1 declares 2,147,483,647 bytes but only")
    i = good.index(b"\xff\x58\x04")
    refused_fast(good[:i + 2] + b"\x8f\xff\xff\x7f" + good[i + 3:], "a meta event declares 33,554,431 bytes")


def test_thousands_of_instrument_parts_are_refused_fast():
    # 200 tracks, each cycling through all 16 x 128 channel/program pairs with a note: 409,600 symusic
    # tracks, 1.9 GB and 4 s before the fix
    ev = bytearray()
    for i in range(16 * 128):
        ch, program = i % 16, i // 16
        ev += bytes((0, 0xC0 | ch, program, 0, 0x90 | ch, 60, 64, 1, 0x80 | ch, 60, 0))
    ev += b"\x00\xff\x2f\x00"
    trk = b"MTrk" + len(ev).to_bytes(4, "big") + bytes(ev)
    data = b"MThd\x00\x00\x00\x06\x00\x01" + (170).to_bytes(2, "big") + b"\x01\xe0" + trk * 170
    assert len(data) > 3_500_000
    refused_fast(data, f"more than {MAX_PARTS:,} instrument parts")


# ---- finding 4: tempo 0 was clamped to 400 BPM --------------------------------------------------------
def with_tempo(mspq: int, at: int = 0, first: int | None = None) -> bytes:
    """A file whose tempo event at tick `at` is `mspq` microseconds per quarter note (another, `first`,
    at tick 0 when given)."""
    extra = [(at, MM("set_tempo", tempo=mspq))]
    ev = [(0, MM("set_tempo", tempo=first))] if first is not None else []
    return midi_bytes([ev + extra + [(0, MM("time_signature", numerator=4, denominator=4)), prog(0, 0)]
                       + note(0, 60, 0, 1920) + note(0, 62, 1920, 3840)])


def test_tempo_0_is_refused_with_what_to_change():
    refused_fast(with_tempo(0), "the tempo event at tick 0 of track 1 is 0 microseconds per quarter note")
    with pytest.raises(MidiError, match=f"re-export the file with a tempo between {MIN_FILE_BPM:g} and "
                                        f"{MAX_FILE_BPM:g} BPM"):
        load_midi(with_tempo(0, at=1920, first=500000))  # not a tempo, wherever it stands


@pytest.mark.parametrize("bpm", [10, 19.9, 400.5, 600])
def test_a_first_tempo_out_of_range_is_refused_not_clamped(bpm):
    with pytest.raises(MidiError, match="outside 20 to 400: re-export the file with a tempo between"):
        load_midi(with_tempo(round(60_000_000 / bpm)))


@pytest.mark.parametrize("bpm", [20, 40, 93, 240, 400])
def test_tempos_in_range_are_kept(bpm):
    assert load_midi(with_tempo(round(60_000_000 / bpm))).bpm == pytest.approx(bpm, rel=1e-5)


def test_later_tempo_changes_are_ignored():
    assert load_midi(with_tempo(6_000_000, at=1920, first=500000)).bpm == 120.0  # 10 BPM later: the first counts


def test_a_short_tempo_event_is_refused():
    good = with_tempo(500000)
    i = good.index(b"\xff\x51\x03")
    bad = good[:i + 2] + b"\x00" + good[i + 6:]
    bad = bad[:18] + (int.from_bytes(bad[18:22], "big") - 3).to_bytes(4, "big") + bad[22:]
    with pytest.raises(MidiError, match="tempo event at tick 0 holds 0 bytes instead of 3"):
        load_midi(bad)


def test_file_bpm_limits_hold_every_bpm_the_app_writes():
    from model.request import MAX_BPM, MIN_BPM

    assert MIN_FILE_BPM <= MIN_BPM and MAX_BPM <= MAX_FILE_BPM
    for bpm in (MIN_BPM, MAX_BPM):
        assert load_midi(to_midi_bytes(Score(make_notes([0], [8], 3, 0, 60), bpm=bpm))).bpm == pytest.approx(bpm)


# ---- finding 5: a 255/128 time signature was accepted ------------------------------------------------
def with_time_signature(num: int, exp: int) -> bytes:
    good = piano(*note(0, 60, 0, 480))
    i = good.index(b"\xff\x58\x04")
    return good[:i + 3] + bytes((num, exp)) + good[i + 5:]


@pytest.mark.parametrize("num,exp,words", [
    (255, 7, "is 255/128, which this app cannot use"),
    (4, 6, "is 4/64, which this app cannot use"),
    (33, 2, "is 33/4, which this app cannot use"),
    (0, 2, "is 0/4, which is not a valid time signature"),
    (4, 8, "is 4/256, which is not a valid time signature"),
    (4, 255, "is 4/2^255, which is not a valid time signature"),
])
def test_time_signatures_out_of_range_are_refused(num, exp, words):
    res = refused_fast(with_time_signature(num, exp), words)
    assert "re-export the file with a time signature such as 4/4, 3/4 or 6/8" in res["message"]


@pytest.mark.parametrize("num,den", [(1, 1), (3, 4), (6, 8), (7, 16), (32, 32), (2, 2)])
def test_time_signatures_in_range_are_kept(num, den):
    assert load_midi(with_time_signature(num, den.bit_length() - 1)).time_signature == (num, den)


def test_a_later_time_signature_out_of_range_is_ignored():
    data = piano(*note(0, 60, 0, 480), extra=[(1920, MM("time_signature", numerator=7, denominator=64))])
    assert load_midi(data).time_signature == (4, 4)
