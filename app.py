"""MIDI Bangers studio: the Gradio page, widgets and wiring only (the service layer is studio.py).

    python app.py            # serves on 0.0.0.0:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)
    MIDI_BANGERS_MCP=0 python app.py   # without the MCP server (on by default: /gradio_api/mcp/)

API (gradio_client: Client(url).predict(..., api_name="/generate"); README.md has an example of each):
- /generate: inputs engine, groups (list), drums, bars, variants, temperature, top_p, top_k, seed ("" =
  random), bpm, style ("none" = no style), midi (a file or None), prompt_bars, the engine options
  noise_sd, alpha, reference ("none" or a built-in reference name), reference_midi (a file or None), then
  key ("none" or e.g. "D minor"), chords ("" or e.g. "Dm Bb F C"), drum_kit ("none" = standard, or a kit
  name); every input has a default.  Outputs: seed used, summary (Markdown), zip of everything, then per
  variant slot 1..8: piano-roll PNG, MP3, MIDI (None for unused slots).
- /continue, /add_part, /regenerate_part, /infill: a MIDI file in; its edited MIDI, MP3, piano-roll PNG and
  a summary out (studio.edit).
/generate takes its inputs as sent (no Gradio preprocessing): a wrong type, a value out of range or a
choice not in a list reaches studio.py and comes back as a message that names the field.  The page's own
events (editing a variant, undo, redo, keep) are private: they work on the browser session's history.
The same named endpoints are MCP tools (launch(mcp_server=True)); their docstrings are the tools' help.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home; works offline

import gradio as gr  # noqa: E402

import studio  # noqa: E402
from model import request as R  # noqa: E402
from model.engine import engine_names, get_engine  # noqa: E402
from render.roll import roll_data, roll_html  # noqa: E402
from tokenizer import harmony as H  # noqa: E402
from tokenizer import vocab as V  # noqa: E402
from tokenizer.score import MAX_FILE_BYTES  # noqa: E402

log = logging.getLogger("app")

SLOTS = R.MAX_VARIANTS
# System fonts only: the default theme would fetch Google Fonts, which an offline machine cannot.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# lighter borders than the theme's; the variant's edit buttons in one compact row
CSS = (".variant-slot {border: 1px solid #eceef2 !important; border-radius: 8px; padding: 6px} "
       ".variant-actions button {min-width: 0 !important} .block {border-color: #eceef2 !important}")
SORRY = ("Sorry, something went wrong on our side while generating. Please try again; if it keeps happening, "
         "the server log has the details.")


OPTION_CONTROLS = ("noise_sd", "alpha", "reference")  # engine options, shown only for engines that have them
NOT_ON_PAGE = ("edit",)  # the per-variant edit buttons say so themselves when an engine cannot edit


def engine_info(name: str) -> tuple[frozenset, tuple, tuple, str]:
    """(controls, styles, references, note) for an engine; a broken engine gives no controls and a note
    saying why."""
    try:
        eng = get_engine(name)
    except Exception as e:  # a missing or broken checkpoint must not take the page down
        log.exception("engine %s unavailable", name)
        return frozenset(), (), (), f"⚠️ engine `{name}` is not available: {e}"
    missing = [c for c in R.ALL_CONTROLS if c not in eng.controls and c not in OPTION_CONTROLS + NOT_ON_PAGE]
    disabled = ", ".join(R.LABELS.get(c, c) for c in missing)
    note = eng.description + (f"  \nNot supported by this engine (disabled): {disabled}." if missing else "")
    return eng.controls, tuple(eng.styles), tuple(getattr(eng, "references", ())), note


KEYS = [studio.NO_KEY] + [f"{t} {m}" for t in H.NOTE_NAMES for m in H.MODES]
KITS = [studio.NO_KEY, *V.DRUM_KITS]
HOW_TO = ("**How it works.** Choose instruments, length and an engine on the left and press **Generate**. "
          "Each variant gets a piano roll that plays along with its preview, and its MIDI for your DAW. Then, "
          "per variant: **continue** it, **add** or **regenerate** a part, **infill** bars, or **keep** it as "
          "the start of the next generation; **Undo** and **Redo** step through your edits. A key, a chord "
          "progression and a drum kit are under *Key, chords and drum kit*.")
EDIT_BUTTONS = (("continue", "Continue"), ("add_part", "Add part"), ("regenerate_part", "Regenerate part"),
                ("infill", "Infill bars"))


def _error(e: Exception) -> gr.Error:
    """The message a person sees: theirs as it is, ours as an apology (the traceback goes to the log)."""
    if isinstance(e, R.RequestError):
        return gr.Error(str(e), print_exception=False)
    if isinstance(e, studio.Cancelled):
        return gr.Error("Stopped.", print_exception=False)
    log.error("generation failed", exc_info=e)
    return gr.Error(SORRY, print_exception=False)


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def build_demo(store: studio.OutputStore | None = None, uploads: studio.UploadCache | None = None,
               sessions: studio.Sessions | None = None) -> gr.Blocks:
    """The page.  `store`: the output folders; `uploads`: the uploads in Gradio's cache (both pruned after
    every request, on page load and every studio.PRUNE_EVERY seconds while the server runs); `sessions`:
    the undo/redo histories of the browser sessions."""
    store = store or studio.OutputStore()
    sessions = sessions or studio.Sessions()
    cancel_flags = studio.CancelFlags()
    names = engine_names()
    controls, styles, references, note = engine_info(names[0])
    has_options = any(c in controls for c in OPTION_CONTROLS)

    with gr.Blocks(title="MIDI Bangers", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        uploads = uploads or studio.UploadCache(demo.GRADIO_CACHE)
        janitor = studio.Janitor(store, uploads)
        gr.Markdown("# MIDI Bangers\nPick instruments, length and how adventurous; press **Generate**; "
                    "listen, edit, and download the MIDI you like.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                engine = gr.Dropdown(names, value=names[0], label=R.LABELS["engine"])
                engine_note = gr.Markdown(note)
                groups = gr.CheckboxGroup(list(V.PITCHED_GROUPS), value=["piano", "bass"], label=R.LABELS["groups"])
                drums = gr.Checkbox(value=True, label=R.LABELS["drums"])
                with gr.Row():
                    bars = gr.Slider(1, R.MAX_BARS, value=8, step=1, label=R.LABELS["bars"])
                    variants = gr.Slider(1, R.MAX_VARIANTS, value=2, step=1, label=R.LABELS["variants"])
                temperature = gr.Slider(R.MIN_TEMPERATURE, R.MAX_TEMPERATURE, value=1.0, step=0.05,
                                        label=R.LABELS["temperature"])
                with gr.Row():
                    top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label=R.LABELS["top_p"])
                    top_k = gr.Number(value=0, minimum=0, maximum=R.MAX_TOP_K, label=f"{R.LABELS['top_k']} (0 = off)")
                with gr.Row():
                    seed = gr.Textbox(value="", label=f"{R.LABELS['seed']} (blank = random)", max_lines=1)
                    bpm = gr.Slider(R.MIN_BPM, R.MAX_BPM, value=120, step=1, label=R.LABELS["bpm"])
                style = gr.Dropdown([studio.NO_STYLE, *styles], value=studio.NO_STYLE, label=R.LABELS["style"],
                                    visible=bool(styles) and "style" in controls)
                with gr.Accordion("Key, chords and drum kit", open=True):
                    key = gr.Dropdown(KEYS, value=studio.NO_KEY, label=f"{R.LABELS['key']} (every pitched note in it)",
                                      interactive="key" in controls, elem_id="key")
                    chords = gr.Textbox(value="", label=f"{R.LABELS['chords']} (one a bar, repeating)",
                                        placeholder="e.g. Dm Bb F C", max_lines=1,
                                        interactive="chords" in controls, elem_id="chords")
                    drum_kit = gr.Dropdown(KITS, value=studio.NO_KEY, label=f"{R.LABELS['drum_kit']} (none = standard)",
                                           elem_id="drum-kit")
                with gr.Accordion("Upload a MIDI (optional)", open=False) as upload_box:
                    gr.Markdown("The transformer continues it, style-vae restyles it, vae-nn and cnn start from it.")
                    midi = gr.File(label=f"{R.LABELS['prompt']} (.mid)", file_types=[".mid", ".midi"], type="filepath")
                    prompt_bars = gr.Slider(1, R.MAX_BARS, value=4, step=1, label=R.LABELS["prompt_bars"])
                with gr.Accordion("Engine options: variation and reference song", open=True,
                                  visible=has_options) as options_box:
                    noise_sd = gr.Slider(0.0, R.MAX_NOISE_SD, value=0.75, step=0.05, label=R.LABELS["noise_sd"],
                                         interactive="noise_sd" in controls)
                    alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label=R.LABELS["alpha"],
                                      interactive="alpha" in controls)
                    reference = gr.Dropdown([studio.NO_REFERENCE, *references], value=studio.NO_REFERENCE,
                                            label=R.LABELS["reference"], interactive="reference" in controls,
                                            allow_custom_value=True)  # the engine checks the name
                    reference_midi = gr.File(label=f"…or a {R.LABELS['reference_midi']} of your own (.mid)",
                                             file_types=[".mid", ".midi"], type="filepath",
                                             interactive="reference" in controls)
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            with gr.Column(scale=2):
                summary = gr.Markdown(HOW_TO, elem_id="summary")
                with gr.Row(visible=False) as result_bar:
                    seed_used = gr.Textbox(label="Seed used", interactive=False, elem_id="seed-used", scale=1)
                    zip_file = gr.File(label="Everything (zip: MIDI, stems, MP3s, rolls, session.json)",
                                       interactive=False, elem_id="zip", scale=2)
                with gr.Accordion("Edit a variant: settings for its buttons", open=True, visible=False) as edit_box:
                    with gr.Row():
                        edit_part = gr.Dropdown(list(V.GROUPS), value="strings", label=R.LABELS["part"],
                                                elem_id="edit-part")
                        edit_bars = gr.Slider(1, R.MAX_BARS, value=4, step=1, label="Continue by (bars)")
                        infill_first = gr.Number(value=2, minimum=1, maximum=R.MAX_BARS, precision=0,
                                                 label="Infill from bar")
                        infill_last = gr.Number(value=3, minimum=1, maximum=R.MAX_BARS, precision=0,
                                                label="to bar")
                    with gr.Row():
                        undo = gr.Button("↶ Undo", interactive=False, elem_id="undo-btn", size="sm")
                        redo = gr.Button("↷ Redo", interactive=False, elem_id="redo-btn", size="sm")
                slots, rolls, slot_boxes, edit_buttons, keep_buttons = [], [], [], [], []
                for i in range(1, SLOTS + 1):
                    with gr.Group(elem_classes="variant-slot", visible=False) as box:
                        roll = roll_html(f"roll-{i}", f"audio-{i}")
                        img = gr.Image(label=f"Variant {i}: piano roll", type="filepath", interactive=False,
                                       visible=False, elem_id=f"roll-png-{i}")
                        aud = gr.Audio(label=f"Variant {i}: MP3 preview", type="filepath", interactive=False,
                                       elem_id=f"audio-{i}")
                        with gr.Row(elem_classes="variant-actions"):
                            for action, text in EDIT_BUTTONS:
                                edit_buttons.append((i, action, gr.Button(text, size="sm",
                                                                          elem_id=f"{action.replace('_', '-')}-{i}")))
                            keep_buttons.append(gr.Button("Keep as start", size="sm", elem_id=f"keep-{i}"))
                        fil = gr.File(label=f"Variant {i}: MIDI", interactive=False, elem_id=f"midi-{i}")
                    slots += [img, aud, fil]
                    rolls.append(roll)
                    slot_boxes.append(box)

        per_control = {"groups": groups, "drums": drums, "bars": bars, "variants": variants,
                       "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed, "bpm": bpm,
                       "prompt": midi, "key": key, "chords": chords}

        options = {"noise_sd": noise_sd, "alpha": alpha}

        def on_engine(name: str):
            ctl, sty, refs, text = engine_info(name)
            ups = [gr.update(interactive=c in ctl) for c in per_control]
            sty_up = gr.update(choices=[studio.NO_STYLE, *sty], value=studio.NO_STYLE,
                               visible=bool(sty) and "style" in ctl)
            opt_ups = [gr.update(interactive=c in ctl) for c in options]
            ref_up = gr.update(choices=[studio.NO_REFERENCE, *refs], value=studio.NO_REFERENCE,
                               interactive="reference" in ctl)
            box_up = gr.update(visible=any(c in ctl for c in OPTION_CONTROLS))
            return [text, *ups, sty_up, *opt_ups, ref_up, gr.update(interactive="reference" in ctl), box_up]

        engine.change(on_engine, engine, [engine_note, *per_control.values(), style, *options.values(), reference,
                                          reference_midi, options_box], api_visibility="private")

        def page_values(result: studio.Result) -> list:
            """The /generate outputs for a page state: plain values (None for unused slots), so API clients
            get file paths."""
            out = [str(result.seed), result.summary, str(result.zip_path)]
            for i in range(SLOTS):
                v = result.variants[i] if i < len(result.variants) else None
                out += [str(v.png), str(v.mp3) if v.mp3 else None, str(v.midi)] if v else [None] * 3
            return out

        # every input has a default, so `client.predict(api_name="/generate")` runs with the page's defaults
        def generate(engine="transformer", groups=("piano", "bass"), drums=True, bars=8, variants=2,
                     temperature=1.0, top_p=0.95, top_k=0, seed="", bpm=120, style=studio.NO_STYLE, midi=None,
                     prompt_bars=4, noise_sd=None, alpha=None, reference=None, reference_midi=None, key=None,
                     chords=None, drum_kit=None, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
            """Generate new music as MIDI: several variants, each with an MP3 preview and a piano roll.

            Args:
                engine: transformer (the main one; the only one that edits), style-vae, vae-nn, cnn, gru, lstm or multi-rnn.
                groups: pitched instrument groups, e.g. ["piano", "bass", "strings"].
                drums: whether there is a drum part.
                bars: length in bars, 1 to 64 (new bars after an uploaded MIDI).
                variants: how many different results, 1 to 8.
                temperature: randomness, 0.1 to 2.0 (1.0 = as trained).
                top_p: nucleus sampling, above 0 to 1.
                top_k: keep the k likeliest choices (0 = off).
                seed: a whole number for repeatable results, or blank for a random one.
                bpm: tempo, 40 to 240 (an uploaded MIDI keeps its own).
                style: a style name the engine knows, or "none".
                midi: a .mid file to continue (transformer), restyle (style-vae) or start from (vae-nn, cnn); or None.
                prompt_bars: how many bars of that file to use.
                noise_sd: vae-nn only: latent noise (variation).
                alpha: vae-nn only: pull towards the reference song, 0 to 1.
                reference: vae-nn only: a built-in reference song name, or "none".
                reference_midi: vae-nn only: a .mid file as the reference song, or None.
                key: key and scale lock such as "D minor", "A dorian" or "E blues", or "none".
                chords: one chord a bar, repeating, such as "Dm Bb F C", or blank.
                drum_kit: General MIDI drum kit (standard, room, power, electronic, tr-808, jazz, brush, orchestra), or "none".
            Returns:
                the seed used, a summary (Markdown), a zip of everything, then for each of 8 variant slots its piano roll (PNG), MP3 and MIDI (empty for unused slots).
            """
            session = _session(request)
            try:
                result = studio.generate(
                    engine, list(groups) if isinstance(groups, tuple) else groups, drums, bars, variants,
                    temperature, top_p, top_k, seed, bpm, style, midi, prompt_bars, noise_sd, alpha, reference,
                    reference_midi, key, chords, drum_kit,
                    progress=lambda f, what: progress(f, desc=what), store=store, uploads=uploads,
                    cancelled=cancel_flags.start(session))
            except Exception as e:
                raise _error(e) from None
            for w in result.warnings:
                gr.Warning(f"{w} (the MIDI is still available)")
            sessions.get(session).push(result)
            return page_values(result)

        def show(request: gr.Request):
            """After any change of the page state: slots, live rolls, edit panel and undo/redo (private)."""
            history = sessions.get(_session(request))
            state = history.current
            n = len(state.variants) if state else 0
            ups = [gr.update(visible=state is not None)] * 2
            ups += [gr.update(visible=i < n) for i in range(SLOTS)]
            ups += [roll_data(state.variants[i].score, state.variants[i].audio_seconds or None) if i < n else None
                    for i in range(SLOTS)]
            ups += [gr.update(interactive=history.can_undo), gr.update(interactive=history.can_redo)]
            return ups

        shown = [result_bar, edit_box, *slot_boxes, *rolls, undo, redo]
        outputs = [seed_used, summary, zip_file, *slots]
        inputs = [engine, groups, drums, bars, variants, temperature, top_p, top_k, seed, bpm, style, midi,
                  prompt_bars, noise_sd, alpha, reference, reference_midi, key, chords, drum_kit]
        # preprocess=False: the values arrive as sent, so studio.py (not Gradio) says what is wrong with them
        gen_event = go.click(generate, inputs, outputs, api_name="generate", concurrency_limit=2,
                             concurrency_id="generate", preprocess=False)
        gen_event.then(show, None, shown, api_visibility="private", queue=False)

        # ---- the editing loop: one click per variant; the page state goes onto the session's history
        edit_settings = [edit_part, edit_bars, infill_first, infill_last, engine, temperature, top_p, top_k, seed,
                         key, chords, drum_kit]

        def make_edit(index: int, action: str):
            def on_edit(part_v, bars_v, first_v, last_v, engine_v, temp_v, top_p_v, top_k_v, seed_v, key_v,
                        chords_v, kit_v, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
                session = _session(request)
                try:
                    result = studio.edit_variant(
                        sessions.get(session), index, action, store, engine=engine_v, part=part_v, bars=bars_v,
                        infill_first=first_v, infill_last=last_v, temperature=temp_v, top_p=top_p_v,
                        top_k=top_k_v, seed=seed_v, key=key_v, chords=chords_v, drum_kit=kit_v,
                        progress=lambda f, what: progress(f, desc=what), cancelled=cancel_flags.start(session))
                except Exception as e:
                    raise _error(e) from None
                return page_values(result)
            return on_edit

        edit_events = []
        for index, action, button in edit_buttons:
            ev = button.click(make_edit(index, action), edit_settings, outputs, api_visibility="private",
                              concurrency_limit=2, concurrency_id="generate")
            ev.then(show, None, shown, api_visibility="private", queue=False)
            edit_events.append(ev)

        def make_step(direction: str):
            def on_step(request: gr.Request = None):
                history = sessions.get(_session(request))
                state = history.undo() if direction == "undo" else history.redo()
                if state is None:
                    raise gr.Error(f"Nothing to {direction}.", print_exception=False)
                try:
                    state = studio.restore(state, store)
                except Exception as e:
                    raise _error(e) from None
                history.replace(state)
                return page_values(state)
            return on_step

        for button, direction in ((undo, "undo"), (redo, "redo")):
            button.click(make_step(direction), None, outputs, api_visibility="private").then(
                show, None, shown, api_visibility="private", queue=False)

        def make_keep(index: int):
            def on_keep(request: gr.Request = None):
                state = sessions.get(_session(request)).current
                if state is None or index > len(state.variants):
                    raise gr.Error("Generate first: there is no variant to keep yet.", print_exception=False)
                v = state.variants[index - 1]
                gr.Info(f"Variant {index} is the new starting point: Generate continues it.")
                if v.bars > R.MAX_BARS:
                    gr.Warning(f"Variant {index} has {v.bars} bars: Generate continues its first {R.MAX_BARS}.")
                return str(v.midi), min(v.bars, R.MAX_BARS), gr.update(open=True)
            return on_keep

        def on_select(evt: gr.SelectData):
            """Bars dragged (or shift-clicked) on a roll become the bars to infill."""
            if not evt.index:
                return gr.update(), gr.update()
            return int(evt.index[0]), int(evt.index[1])

        for roll in rolls:
            roll.select(on_select, None, [infill_first, infill_last], api_visibility="private", queue=False)

        for i, button in enumerate(keep_buttons, 1):
            button.click(make_keep(i), None, [midi, prompt_bars, upload_box], api_visibility="private")

        def on_stop(request: gr.Request):
            cancel_flags.stop(_session(request))

        stop.click(on_stop, None, None, cancels=[gen_event, *edit_events], api_visibility="private", queue=False)

        # ---- the named editing endpoints (API and MCP tools): a MIDI file in, the edited one out
        with gr.Column(visible=False):
            api_midi = gr.File(label=R.LABELS["prompt"], file_types=[".mid", ".midi"], type="filepath")
            api_part = gr.Dropdown(list(V.GROUPS), value="strings", label=R.LABELS["part"])
            api_bars = gr.Number(value=4, precision=0, label="New bars")
            api_first = gr.Number(value=2, precision=0, label="First bar")
            api_last = gr.Number(value=3, precision=0, label="Last bar")
            api_common = [gr.Dropdown(names, value=names[0], label=R.LABELS["engine"]),
                          gr.Number(value=1.0, label=R.LABELS["temperature"]),
                          gr.Number(value=0.95, label=R.LABELS["top_p"]), gr.Number(value=0, label=R.LABELS["top_k"]),
                          gr.Textbox(value="", label=R.LABELS["seed"]),
                          gr.Dropdown(KEYS, value=studio.NO_KEY, label=R.LABELS["key"]),
                          gr.Textbox(value="", label=R.LABELS["chords"]),
                          gr.Dropdown(KITS, value=studio.NO_KEY, label=R.LABELS["drum_kit"])]
            api_outputs = [gr.File(label="MIDI"), gr.Audio(label="MP3", type="filepath"),
                           gr.Image(label="Piano roll", type="filepath"), gr.Markdown()]
            for name, fn, extra in (("continue", continue_midi, [api_bars]), ("add_part", add_part, [api_part]),
                                    ("regenerate_part", regenerate_part, [api_part]),
                                    ("infill", infill, [api_first, api_last])):
                gr.Button(visible=False).click(endpoint(fn, store, uploads), [api_midi, *extra, *api_common],
                                               api_outputs, api_name=name, concurrency_limit=2,
                                               concurrency_id="generate")
        demo.load(janitor.sweep, None, None, api_visibility="private", queue=False)
    janitor.start(running=lambda: demo.is_running)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


# ---- the named editing endpoints: their docstrings are the API's and the MCP tools' help ----------------
EDIT_ARGS = """        engine: the engine; editing needs one with the edit control (transformer).
        temperature: randomness, 0.1 to 2.0 (1.0 = as trained).
        top_p: nucleus sampling, above 0 to 1.
        top_k: keep the k likeliest choices (0 = off).
        seed: a whole number for repeatable results, or blank for a random one.
        key: key and scale lock for the new notes such as "D minor" or "A dorian", or "none".
        chords: one chord a bar, repeating, such as "Dm Bb F C", or blank.
        drum_kit: General MIDI kit (standard, room, power, electronic, tr-808, jazz, brush, orchestra), or "none" to keep the song's.
"""


def edit_tool(fn):
    """Fill the shared argument help ({common}) into an editing endpoint's docstring."""
    fn.__doc__ = fn.__doc__.replace("{common}", EDIT_ARGS)
    return fn


@edit_tool
def continue_midi(midi: str, bars: int = 4, engine: str = "transformer", temperature: float = 1.0,
                  top_p: float = 0.95, top_k: int = 0, seed: str = "", key: str = "none", chords: str = "",
                  drum_kit: str = "none"):
    """Continue a MIDI song: keep every note of it and add `bars` new bars in its tempo and metre.

    Args:
        midi: the song, a .mid file (at most 64 bars are used).
        bars: how many bars to add, 1 to 64.
{common}    Returns:
        the continued MIDI, its MP3 preview, its piano roll (PNG) and a summary (Markdown).
    """
    return "continue", {"bars": bars}


@edit_tool
def add_part(midi: str, part: str = "strings", engine: str = "transformer", temperature: float = 1.0,
             top_p: float = 0.95, top_k: int = 0, seed: str = "", key: str = "none", chords: str = "",
             drum_kit: str = "none"):
    """Add a part to a MIDI song: every note of the song stays; a new part plays along over all its bars.

    Args:
        midi: the song, a .mid file (at most 64 bars are used).
        part: the part to add, one of piano, chromatic, organ, guitar, bass, strings, brass, reed, pipe, lead, pad, drums (the song must not have it yet).
{common}    Returns:
        the MIDI with the new part, its MP3 preview, its piano roll (PNG) and a summary (Markdown).
    """
    return "add_part", {"part": part}


@edit_tool
def regenerate_part(midi: str, part: str = "bass", engine: str = "transformer", temperature: float = 1.0,
                    top_p: float = 0.95, top_k: int = 0, seed: str = "", key: str = "none", chords: str = "",
                    drum_kit: str = "none"):
    """Regenerate one part of a MIDI song: that part is written anew, every other note stays.

    Args:
        midi: the song, a .mid file (at most 64 bars are used).
        part: the part to write anew (the song must have it), e.g. bass or drums.
{common}    Returns:
        the MIDI with the part regenerated, its MP3 preview, its piano roll (PNG) and a summary (Markdown).
    """
    return "regenerate_part", {"part": part}


@edit_tool
def infill(midi: str, first_bar: int = 2, last_bar: int = 3, engine: str = "transformer",
           temperature: float = 1.0, top_p: float = 0.95, top_k: int = 0, seed: str = "", key: str = "none",
           chords: str = "", drum_kit: str = "none"):
    """Infill bars of a MIDI song: bars first_bar..last_bar are written anew, leading into the bars after them;
    every other bar stays note for note.

    Args:
        midi: the song, a .mid file (at most 64 bars are used).
        first_bar: the first bar to write anew (1 = the song's first bar).
        last_bar: the last bar to write anew (at least first_bar, at most the song's last bar).
{common}    Returns:
        the MIDI with the bars infilled, its MP3 preview, its piano roll (PNG) and a summary (Markdown).
    """
    return "infill", {"infill_first": first_bar, "infill_last": last_bar}


def endpoint(fn, store: studio.OutputStore, uploads: studio.UploadCache):
    """The event handler of a named editing endpoint: `fn` names the action and its own arguments (and
    carries the docstring and signature the API and MCP show); studio.edit does the work."""
    import functools
    import inspect

    params = list(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def handler(*values, progress=gr.Progress()):  # noqa: B008
        args = dict(zip(params, values))
        action, own = fn(**args)
        common = {k: args[k] for k in ("engine", "temperature", "top_p", "top_k", "seed", "key", "chords",
                                       "drum_kit")}
        try:
            result = studio.edit(action, args["midi"], **own, **common, store=store, uploads=uploads,
                                      progress=lambda f, what: progress(f, desc=what))
        except Exception as e:
            raise _error(e) from None
        v = result.variants[0]
        return str(v.midi), str(v.mp3) if v.mp3 else None, str(v.png), result.summary
    return handler


def serve(demo: gr.Blocks, host: str | None = None, port: int | None = None, mcp_server: bool | None = None,
          **kwargs):
    """Launch with the studio's settings (offline theme, no SSR, uploads limited to what the tokenizer
    accepts for a MIDI file) and the MCP server at /gradio_api/mcp/ (off with MIDI_BANGERS_MCP=0)."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    if mcp_server is None:
        mcp_server = os.environ.get("MIDI_BANGERS_MCP", "1").strip().lower() not in ("0", "false", "no", "off")
    return demo.launch(server_name=host, server_port=port, theme=THEME, css=CSS, ssr_mode=False,
                       max_file_size=MAX_FILE_BYTES, show_error=True, mcp_server=mcp_server, **kwargs)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(build_demo())
