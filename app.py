"""MIDI Bangers studio: the Gradio page, widgets and wiring only (the service layer is studio.py).

    python app.py            # serves on 0.0.0.0:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)

API: one named endpoint, /generate (gradio_client: Client(url).predict(..., api_name="/generate")), with
inputs engine, groups (list), drums, bars, variants, temperature, top_p, top_k, seed ("" = random),
bpm, style ("none" = no style), midi (a file or None), prompt_bars, then the engine options noise_sd,
alpha, reference ("none" or a built-in reference name), reference_midi (a file or None), used only by
engines that have them (vae-nn); outputs seed used, summary (Markdown),
zip of everything, then per variant slot 1..8: piano-roll PNG, MP3, MIDI (None for unused slots).
/generate takes its inputs as sent (no Gradio preprocessing): a wrong type, a value out of range or a
choice not in a list reaches studio.py and comes back as a message that names the field.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home; works offline

import gradio as gr  # noqa: E402

import studio  # noqa: E402
from model import request as R  # noqa: E402
from model.engine import engine_names, get_engine  # noqa: E402
from tokenizer import vocab as V  # noqa: E402
from tokenizer.score import MAX_FILE_BYTES  # noqa: E402

log = logging.getLogger("app")

SLOTS = R.MAX_VARIANTS
# System fonts only: the default theme would fetch Google Fonts, which an offline machine cannot.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = ".variant-slot {border-top: 1px solid #ddd; padding-top: 6px}"
SORRY = ("Sorry, something went wrong on our side while generating. Please try again; if it keeps happening, "
         "the server log has the details.")


OPTION_CONTROLS = ("noise_sd", "alpha", "reference")  # engine options, shown only for engines that have them
# controls the request knows but this page has no widgets for yet (the editing controls are CLI-only)
NOT_ON_PAGE = ("key", "chords", "edit")


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


def build_demo(store: studio.OutputStore | None = None, uploads: studio.UploadCache | None = None) -> gr.Blocks:
    """The page.  `store`: the output folders; `uploads`: the uploads in Gradio's cache (both pruned after
    every request, on page load and every studio.PRUNE_EVERY seconds while the server runs)."""
    store = store or studio.OutputStore()
    cancel_flags = studio.CancelFlags()
    names = engine_names()
    controls, styles, references, note = engine_info(names[0])
    has_options = any(c in controls for c in OPTION_CONTROLS)

    with gr.Blocks(title="MIDI Bangers", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        uploads = uploads or studio.UploadCache(demo.GRADIO_CACHE)
        janitor = studio.Janitor(store, uploads)
        gr.Markdown("# MIDI Bangers\nPick instruments, length and how adventurous; press **Generate**; "
                    "listen, look, and download the MIDI you like.")
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
                with gr.Accordion("Upload a MIDI (optional)", open=False):
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
                seed_used = gr.Textbox(label="Seed used", interactive=False, elem_id="seed-used")
                summary = gr.Markdown(elem_id="summary")
                zip_file = gr.File(label="Everything (zip of MIDI + MP3)", interactive=False, elem_id="zip")
                slots = []
                for i in range(1, SLOTS + 1):
                    with gr.Group(elem_classes="variant-slot"):
                        img = gr.Image(label=f"Variant {i}: piano roll", type="filepath", interactive=False,
                                       visible=False, elem_id=f"roll-{i}")
                        aud = gr.Audio(label=f"Variant {i}: MP3 preview", type="filepath", interactive=False,
                                       visible=False, elem_id=f"audio-{i}")
                        fil = gr.File(label=f"Variant {i}: MIDI", interactive=False, visible=False,
                                      elem_id=f"midi-{i}")
                    slots += [img, aud, fil]

        per_control = {"groups": groups, "drums": drums, "bars": bars, "variants": variants,
                       "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed, "bpm": bpm,
                       "prompt": midi}

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

        # every upload defaults to None, so `client.predict(api_name="/generate")` runs with the page's defaults
        def run(engine_name, groups_v, drums_v, bars_v, variants_v, temp_v, top_p_v, top_k_v, seed_v, bpm_v,
                style_v, midi_v=None, prompt_bars_v=4, noise_v=None, alpha_v=None, reference_v=None,
                reference_midi_v=None, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
            session = getattr(request, "session_hash", None) if request is not None else None
            try:
                result = studio.generate(engine_name, groups_v, drums_v, bars_v, variants_v, temp_v, top_p_v,
                                         top_k_v, seed_v, bpm_v, style_v, midi_v, prompt_bars_v, noise_v, alpha_v,
                                         reference_v, reference_midi_v,
                                         progress=lambda f, what: progress(f, desc=what), store=store,
                                         uploads=uploads, cancelled=cancel_flags.start(session))
            except R.RequestError as e:  # the person's mistake: the message names the field
                raise gr.Error(str(e), print_exception=False) from None
            except studio.Cancelled:
                raise gr.Error("Stopped.", print_exception=False) from None
            except Exception:  # ours: a short apology here, the traceback in the server log
                log.exception("generation failed")
                raise gr.Error(SORRY, print_exception=False) from None
            for w in result.warnings:
                gr.Warning(f"{w} (the MIDI is still available)")
            out = [str(result.seed), result.summary, str(result.zip_path)]
            for i in range(SLOTS):  # plain values (None for unused slots), so API clients get file paths
                v = result.variants[i] if i < len(result.variants) else None
                out += [str(v.png), str(v.mp3) if v.mp3 else None, str(v.midi)] if v else [None] * 3
            return out

        def show_slots(*values):
            """Show the slots that got a file and hide the rest (a follow-up step, not part of the API)."""
            return [gr.update(visible=v is not None) for v in values]

        inputs = [engine, groups, drums, bars, variants, temperature, top_p, top_k, seed, bpm, style, midi,
                  prompt_bars, noise_sd, alpha, reference, reference_midi]
        # preprocess=False: the values arrive as sent, so studio.py (not Gradio) says what is wrong with them
        gen_event = go.click(run, inputs, [seed_used, summary, zip_file, *slots], api_name="generate",
                             concurrency_limit=2, concurrency_id="generate", preprocess=False)
        gen_event.then(show_slots, slots, slots, api_visibility="private", queue=False)

        def on_stop(request: gr.Request):
            cancel_flags.stop(getattr(request, "session_hash", None) if request is not None else None)

        stop.click(on_stop, None, None, cancels=[gen_event], api_visibility="private", queue=False)
        demo.load(janitor.sweep, None, None, api_visibility="private", queue=False)
    janitor.start(running=lambda: demo.is_running)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def serve(demo: gr.Blocks, host: str | None = None, port: int | None = None, **kwargs):
    """Launch with the studio's settings (offline theme, no SSR, uploads limited to what the tokenizer
    accepts for a MIDI file)."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    return demo.launch(server_name=host, server_port=port, theme=THEME, css=CSS, ssr_mode=False,
                       max_file_size=MAX_FILE_BYTES, show_error=True, **kwargs)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(build_demo())
