"""
Evaluation of ViLAMP.

- `vilamp.evaluation.lmms_eval_model`: the lmms-eval model `vilamp` (`lmms-eval --model vilamp ...`), registered
  through the `lmms_eval.models` entry point by `lmms_eval_manifest`;
- `vilamp.evaluation.prompts`: the released scripts' protocol on top of lmms-eval's prompts (question extraction);
- `vilamp.evaluation.video_niah`: the Video-NIAH builder and scorer (`python -m vilamp.evaluation.video_niah`).

See docs/evaluation.md.
"""


def lmms_eval_manifest():
    """
    lmms-eval's registration of the model `vilamp` (the `lmms_eval.models` entry point). It names the class by its
    path, so lmms-eval imports the model code only when `--model vilamp` is asked for.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="vilamp", simple_class_path="vilamp.evaluation.lmms_eval_model.Vilamp")
