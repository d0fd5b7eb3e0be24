"""LoRA with PEFT as docs/training.md sets it up: adapters on the language model only, trained, merged, reloaded."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText

from conftest import tiny_model, video_training_batch


def test_lora_trains_the_language_model_and_merges_into_a_model_auto_reloads(tmp_path):
    model = tiny_model(seed=11)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    lora = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=r".*\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        modules_to_save=["multi_modal_projector"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    adapters = [name for name, p in peft_model.named_parameters() if p.requires_grad and "lora_" in name]
    assert adapters and all(".language_model." in name for name in adapters)
    batch = video_training_batch(torch.tensor([False, True, False, True]), seed=7)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    losses = []
    for _ in range(5):
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    merged = peft_model.merge_and_unload().eval()
    changed = {name for name, p in merged.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(".language_model." in name or "multi_modal_projector" in name for name in changed)
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == "VilampForConditionalGeneration"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, merged(**batch).logits)
