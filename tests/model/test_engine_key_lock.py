"""Key and chord lock of every engine but the transformer (tested in test_editing.py), through the public API
with the shipped checkpoints: every pitched note in the key's scale (model.adherence's figure and an
independent check here), drums exempt, the bass on its bar's chord tones, a chord pull that pulls; and
each engine's `plays` / `groups_written` against what it writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import rollwindows as RW
from model.adherence import adherence
from model.engine import get_engine
from model.request import GenerationRequest, RequestError
from model.sampling.pitch import PitchLock, lock_notes
from tests.conftest import MIDI_FIXTURES
from tokenizer import harmony as H
from tokenizer import load_midi
from tokenizer import vocab as V

ENGINES = ("style-vae", "vae-nn", "cnn", "gru", "lstm", "multi-rnn")
WITH_DRUMS = ("style-vae", "vae-nn", "cnn", "multi-rnn")
SEEDS, VARIANTS = (0, 1), 5  # ten pieces a check: every variant has its own random stream (cnn: its own start)
KEY = "D minor"
CHORDS = "Dm Bb F C"
BASS = V.GROUPS.index("bass")


pytestmark = pytest.mark.usefixtures("one_thread")


def run(name: str, **fields):
    """(the request as served, its scores) for `fields` on the shipped checkpoint of `name`."""
    eng = get_engine(name)
    req = eng.restrict(GenerationRequest(**fields)).validate()
    return req, eng.generate(req)


def pitched(notes: np.ndarray) -> np.ndarray:
    return notes[notes["group"] != V.DRUM_GROUP]


@pytest.mark.parametrize("name", ENGINES)
def test_every_pitched_note_keeps_to_the_key(name):
    scale = H.parse_key(KEY).pitch_classes
    n_pitched, drum_keys = 0, set()
    for seed in SEEDS:
        req, scores = run(name, groups=("piano", "bass", "strings"), drums=True, bars=4, variants=VARIANTS,
                          seed=seed, key=KEY)
        for s in scores:
            p = pitched(s.notes)
            assert adherence(req, s)["in_key"] == (1.0 if len(p) else None)
            assert {int(x) % 12 for x in p["pitch"]} <= scale  # independent of model.adherence
            n_pitched += len(p)
            drum_keys |= set(s.notes["pitch"][s.notes["group"] == V.DRUM_GROUP].tolist())
    assert n_pitched >= 2 * VARIANTS * len(SEEDS)  # not empty pieces passing trivially
    if name in WITH_DRUMS:  # drums are exempt: their keys are not held to the scale
        assert {k for k in drum_keys if k % 12 not in scale}, sorted(drum_keys)


@pytest.mark.parametrize("name", ENGINES)
def test_without_a_lock_the_engines_are_not_in_key_by_chance(name):
    """The figure the lock moves: the same requests without it leave notes out of the scale."""
    _, scores = run(name, groups=("piano", "bass", "strings"), drums=True, bars=4, variants=4, seed=0)
    shares = [H.in_key_share(s.notes, H.parse_key(KEY)) for s in scores]
    assert min(x for x in shares if x is not None) < 1.0


@pytest.mark.parametrize("name", ENGINES)
def test_the_bass_plays_its_bars_chord_tones(name):
    chords = H.parse_chords(CHORDS)
    scale = H.parse_key(KEY).pitch_classes
    n_bass = 0
    for seed in SEEDS:
        # gru and lstm write the first group: the bass
        req, scores = run(name, groups=("bass", "piano"), drums=True, bars=4, variants=VARIANTS, seed=seed, key=KEY,
                          chords=CHORDS)
        for s in scores:
            bass = s.notes[s.notes["group"] == BASS]
            fig = adherence(req, s)
            assert fig["in_key"] == (1.0 if len(pitched(s.notes)) else None)
            assert fig["bass_on_chord_tones"] == (1.0 if len(bass) else None)
            for onset, pitch in zip(bass["onset"].tolist(), bass["pitch"].tolist()):
                assert pitch % 12 in chords[(onset // s.bar_steps) % len(chords)].tones & scale
            n_bass += len(bass)
    assert n_bass >= VARIANTS * len(SEEDS)


@pytest.mark.parametrize("name", ENGINES)
def test_chords_without_a_key_allow_only_the_chords_notes(name):
    notes = frozenset({0, 4, 7, 9})  # C and Am
    _, scores = run(name, groups=("piano", "bass"), drums=True, bars=4, variants=VARIANTS, seed=0, chords="C Am")
    for s in scores:
        assert {int(x) % 12 for x in pitched(s.notes)["pitch"]} <= notes


@pytest.mark.parametrize("name", ENGINES)
def test_the_chord_pull_raises_the_chord_tone_share(name):
    """The non-bass parts lean on chord tones by `chord_bias` (0: no pull)."""
    share = {}
    for bias in (0.0, 6.0):
        hits = total = 0
        req, scores = run(name, groups=("piano",), drums=False, bars=4, variants=6, seed=0, key="C major",
                          chords="C F G Am", chord_bias=bias)
        for s in scores:
            p = pitched(s.notes)
            if len(p):
                hits += H.chord_tone_share(p, req.parsed_chords, s.bar_steps, strong_only=False) * len(p)
                total += len(p)
        share[bias] = hits / total
    assert share[6.0] > share[0.0] + 0.1, share


@pytest.mark.parametrize("name", ["cnn", "vae-nn"])
def test_a_continuation_keeps_the_lock_in_the_prompts_metre(name):
    """After an uploaded MIDI (5/4 here) the chords count the prompt's bars; the prompt is not touched."""
    head = load_midi(next(f for f in MIDI_FIXTURES if f.name.startswith("5432gone"))).first_bars(4)
    assert head.time_signature == (5, 4)
    req, scores = run(name, groups=("piano", "bass"), bars=8, variants=3, seed=1, prompt=head, key=KEY,
                      chords=CHORDS)
    chords, new = H.parse_chords(CHORDS), 0
    for s in scores:
        fig = adherence(req, s)
        assert fig["prompt_notes_kept"] == 1.0 and fig["in_key"] in (1.0, None)
        tail = s.notes[s.notes["onset"] >= head.length]
        assert {int(x) % 12 for x in pitched(tail)["pitch"]} <= H.parse_key(KEY).pitch_classes
        bass = tail[tail["group"] == BASS]
        assert all(p % 12 in chords[(o // s.bar_steps) % 4].tones for o, p in zip(bass["onset"], bass["pitch"]))
        new += len(pitched(tail))
    assert new


# ---- the lock itself -------------------------------------------------------------------------------
def test_pitch_lock_tables():
    req = GenerationRequest(key=KEY, chords=CHORDS, chord_bias=1.5).validate()
    lock = PitchLock.of(req)
    scale = torch.from_numpy(H.pitch_mask(H.parse_key(KEY).pitch_classes))
    bass, piano, drums = lock.table(BASS), lock.table(0), lock.table(V.DRUM_GROUP)
    assert bass.shape == piano.shape == drums.shape == (4, 128)
    assert torch.equal(drums, torch.zeros(4, 128))
    for c, chord in enumerate(req.parsed_chords):
        tones = torch.from_numpy(H.pitch_mask(chord.tones))
        assert torch.equal(torch.isfinite(bass[c]), scale & tones) and (bass[c][torch.isfinite(bass[c])] == 0).all()
        assert torch.equal(torch.isfinite(piano[c]), scale)
        assert torch.equal(piano[c][scale], torch.where(tones, 1.5, 0.0)[scale])
    assert lock.chord_of([0, 31, 32, 4 * 32, 5 * 32 + 7]).tolist() == [0, 0, 1, 0, 1]
    assert PitchLock.of(GenerationRequest().validate()) is None
    no_key = PitchLock.of(GenerationRequest(chords="C Am").validate())
    assert set(np.flatnonzero(no_key.scale) % 12) == {0, 4, 7, 9}


def test_the_lock_picks_pitches_not_how_much_is_played():
    """Sampled engines: the odds of a note against hold/rest stay the model's; threshold engines: a step whose
    best pitch is forbidden still plays, on the best allowed pitch."""
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5, -1.0]])  # tokens 0, 1: hold, rest; 2..4: notes
    is_note = torch.tensor([False, False, True, True, True])
    shift = torch.tensor([[0.0, 0.0, float("-inf"), 0.0, 1.0]])
    out = lock_notes(logits, shift, is_note)
    p, q = torch.softmax(logits, -1)[0], torch.softmax(out, -1)[0]
    assert torch.allclose(q[:2], p[:2]) and q[2] == 0
    assert torch.isclose(q[4] / q[3], torch.exp(torch.tensor(-1.5 + 1.0)))  # the pull on top of the model's odds
    cells = torch.tensor([[3.0, 1.0, 0.0], [-5.0, -4.0, -6.0]])  # a cell that plays, one that does not
    locked = RW.locked_logits(cells, torch.tensor([float("-inf"), 0.0, 0.0]))
    assert locked[0].tolist() == [float("-inf"), 3.0, 2.0] and locked[1].tolist() == [float("-inf"), -4.0, -6.0]
    pulled = RW.locked_logits(cells, torch.tensor([0.0, 0.0, 4.0]))  # a pull: the step's best stays the model's
    assert pulled[0].tolist() == [2.0, 0.0, 3.0] and pulled[1].tolist() == [-7.0, -6.0, -4.0]


def test_window_lock_shifts_follow_the_bars_and_spare_the_drums():
    req = GenerationRequest(key=KEY, chords=CHORDS, bars=8).validate()
    shifts = RW.lock_shifts(req, 2)
    assert shifts.shape == (2, RW.N_TRACKS, RW.WINDOW, RW.PITCHES)
    assert (shifts[:, RW.DRUM_TRACK] == 0).all()
    lock = PitchLock.of(req)
    cells_per_bar = V.STEPS_PER_BAR // RW.CELL
    for w in range(2):
        for cell in (0, cells_per_bar - 1, cells_per_bar, RW.WINDOW - 1):
            bar = (w * RW.WINDOW + cell) // cells_per_bar
            assert torch.equal(shifts[w, RW.TRACKS.index("bass"), cell], lock.table(BASS)[bar % 4])
    assert RW.lock_shifts(GenerationRequest().validate(), 2) is None


# ---- who plays ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENGINES)
def test_plays_and_groups_written_match_the_output(name):
    eng = get_engine(name)
    plays = set(V.GROUPS if eng.plays is None else eng.plays)
    everything = eng.restrict(GenerationRequest(groups=V.PITCHED_GROUPS, drums=True, bars=4)).validate()
    written = set(eng.groups_written(everything))
    _, scores = run(name, groups=V.PITCHED_GROUPS, drums=True, bars=4, variants=3)
    heard = {V.GROUPS[g] for s in scores for g in s.groups}
    assert heard <= written <= plays
    if name != "style-vae":  # the style decides which of the requested groups play; the others write all
        assert heard == written
    for group in V.GROUPS:  # every group it declares it can play comes out when asked for alone
        fields = dict(groups=(), drums=True) if group == "drums" else dict(groups=(group,), drums=False)
        if group not in plays:
            with pytest.raises(RequestError):
                run(name, bars=2, **fields)
            continue
        outs = [{V.GROUPS[g] for g in s.groups} for s in run(name, bars=2, variants=2, **fields)[1]]
        assert {group} in outs, (group, outs)
