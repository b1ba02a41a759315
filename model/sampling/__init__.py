"""Sampling, one layer a module (each imports only those above it):

    filters   SamplingParams and the logit filters every engine samples with (temperature, top-k, top-p)
    plan      Plan: a request as one decoding problem (free generation here; each edit plans itself,
              model.edits)
    pitch     PitchLock, the key and chord rule every engine applies, and the transformer's pitch masks
    grammar   the 3-token grammar: decoding state, hard masks, update
    rules     the soft pulls on top of the masks, and `constrain`, which applies them in order
    decode    sample_scores: the transformer's batched loop (style pick, prefill, slide)
    loop      make_loops: seamless loops, the last bar chosen by the model's score of the first bar after it
              (imported by the transformer engine, not re-exported here)

The names below are re-exported so `from model.sampling import X` works; engines import the layer they use.
"""

from .decode import sample_scores
from .filters import SamplingParams, apply_temperature, sample_token, top_k_filter, top_p_filter
from .grammar import DURVEL_MASK, SHIFT_MASK, STYLE_MASK, Grammar, group_mask
from .pitch import PitchLock, lock_notes, pitch_controls
from .plan import Plan, part_density, plan_request
from .rules import SOFT_RULES, constrain

__all__ = ["DURVEL_MASK", "SHIFT_MASK", "SOFT_RULES", "STYLE_MASK", "Grammar", "PitchLock", "Plan",
           "SamplingParams", "apply_temperature", "constrain", "group_mask", "lock_notes", "part_density",
           "pitch_controls", "plan_request", "sample_scores", "sample_token", "top_k_filter", "top_p_filter"]
