"""LoRA-SB with a plain `transformers.Trainer`: attach, train, save, reload, export to PEFT.

    python examples/lora_sb_trainer.py --model minilm --dataset movie-sentiment --rank 16 --output-dir runs/example

Everything here is ordinary Hugging Face code except two calls: `attach_lora_sb` (estimate the
first step on a few batches, attach the adapters, freeze all but the r x r cores and the head) and
the adapter verbs of `gelora.adapters.lora_xs`. tests/test_examples.py runs it on the tiny model.
"""
import argparse
import os
import tempfile

import torch
from peft import PeftModel
from transformers import Trainer, TrainingArguments

from gelora.adapters.files import export_peft_lora, load_adapter, save_adapter
from gelora.adapters.lora_sb import attach_lora_sb
from gelora.data.tasks import collator, load_dataset, seeded_loader, tokenize
from gelora.models.loading import load_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="minilm, tiny-bert, or a local / hub model folder")
    parser.add_argument("--dataset", default="movie-sentiment")
    parser.add_argument("--n-train", type=int, default=1600)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup-steps", type=int, default=6)
    parser.add_argument("--output-dir", default="runs/example")
    args = parser.parse_args(argv)

    train = load_dataset(args.dataset, "train").subset(args.n_train, seed=0)
    test = load_dataset(args.dataset, "test", task=train.task, label_names=train.label_names)
    model, tokenizer = load_model(args.model, "classification", train.num_labels, seed=0)
    tokens, test_tokens = tokenize(train, tokenizer, 64), tokenize(test, tokenizer, 64)

    # LoRA-SB: the update of the first step (whose lr is lr / warm-up steps), then the adapters.
    batches = seeded_loader(tokens, tokenizer, train.task, args.batch_size, seed=0)
    attach_lora_sb(model, batches, init_lr=args.lr / args.warmup_steps, rank=args.rank, num_samples=64)
    print(f"trainable: {sum(p.numel() for p in model.parameters() if p.requires_grad):,} parameters")

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(model=model, train_dataset=tokens, data_collator=collator(tokenizer, train.task),
                          args=TrainingArguments(scratch, learning_rate=args.lr, num_train_epochs=1,
                                                 per_device_train_batch_size=args.batch_size, warmup_steps=args.warmup_steps,
                                                 save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
                                                 disable_tqdm=True, logging_steps=10, seed=0))
        trainer.train()
    model.eval()

    adapter, peft_dir = os.path.join(args.output_dir, "lora_sb"), os.path.join(args.output_dir, "peft")
    save_adapter(model, adapter)                                   # B, A, R and the head, with checksums
    reloaded = load_adapter(load_model(args.model, "classification", train.num_labels, seed=0)[0].eval(), adapter)
    export_peft_lora(model, peft_dir)                              # a plain PEFT LoRA adapter (lora_B = B R)
    peft_model = PeftModel.from_pretrained(load_model(args.model, "classification", train.num_labels, seed=0)[0],
                                           peft_dir).eval()

    batch = {k: v for k, v in collator(tokenizer, test.task)([test_tokens[i] for i in range(32)]).items() if k != "labels"}
    with torch.no_grad():
        logits = [m(**batch).logits for m in (model, reloaded, peft_model)]
    accuracy = float((logits[0].argmax(-1) == torch.as_tensor(test.labels[:32])).float().mean())
    print(f"accuracy on 32 test sentences: {accuracy:.3f}; reload identical: {torch.equal(logits[0], logits[1])}; "
          f"PEFT export max difference: {float((logits[0] - logits[2]).abs().max()):.2e}")
    return logits


if __name__ == "__main__":
    main()
