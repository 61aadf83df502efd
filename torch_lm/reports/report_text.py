"""The text of ``reports/REPORT.md``: every sentence and table built from the numbers of one
comparison run (``torch_lm.reports.compare``), so the report says only what was computed."""

from __future__ import annotations

from pathlib import Path

from torch_lm.reports.compare_rows import (
    AGREEMENT,
    COUNT_KINDS,
    DEFAULT_TUNING_CHECKPOINT,
    DIMINISHING,
    SHOWN_CHARS,
    Row,
)
from torch_lm.training.tensorboard_log import markdown_code_block


def context_answers(results: dict) -> list[str]:
    """Exercise 3.10 from the sweep's numbers: the trend, where returns diminish, n-gram vs neural."""
    rows = results["rows"]
    points = [(r["context"], r["neural"]["val_ppl"]) for r in rows]
    trend = " → ".join(f"{p:.3f} (context {c})" for c, p in points)
    lines = [
        f"- **Trend.** With an equal budget of {results['steps']} steps per context, the NeuralLM's "
        f"held-out perplexity goes {trend}."
    ]
    gains = [(a, b, 1 - pb / pa) for (a, pa), (b, pb) in zip(points, points[1:])]
    if gains:
        a, b, best = max(gains, key=lambda g: g[2])
        lines.append(
            f"- **Largest gain**: from context {a} to {b}, perplexity {best:.1%} lower."
            if best > 0
            else "- **No longer context lowers the perplexity** in this sweep."
        )
        small = [(a, b, g) for a, b, g in gains if g < DIMINISHING]
        if small:
            a, b, g = small[0]
            change = f"{g:.1%} lower" if g >= 0 else f"{-g:.1%} higher"
            lines.append(
                f"- **Diminishing returns** from context {a} to {b}: perplexity {change}, the "
                f"first step of the sweep that gains less than {DIMINISHING:.0%}."
                + (
                    " (Possibly under-training rather than context: with an equal step budget "
                    "the longer context has more input weights to fit.)"
                    if g < 0
                    else ""
                )
            )
        else:
            lines.append(
                f"- **No diminishing returns within this sweep**: every step gains at least "
                f"{DIMINISHING:.0%} perplexity."
            )
    best_c, best_p = min(points, key=lambda p: p[1])
    lines.append(f"- **Best context** in the sweep: {best_c} (perplexity {best_p:.3f}).")
    for row in rows:
        neural, ngram = row["neural"], row["ngram"]
        if ngram is None:
            lines.append(
                f"- Context {row['context']}: no n-gram point — order {row['context'] + 1} "
                f"cannot be coded (V^order must fit in int64; the largest order for "
                f"V = {results['vocab_size']} is {results['max_ngram_order']})."
            )
            continue
        diff = ngram["val_loss"] - neural["val_loss"]
        winner = "the NeuralLM is lower" if diff > 0 else "the n-gram is lower"
        lines.append(
            f"- Context {row['context']}: NeuralLM {neural['val_ppl']:.3f} vs modified KN "
            f"{ngram['order']}-gram {ngram['val_ppl']:.3f} — {winner} by {abs(diff):.4f} nats/char."
        )
    return lines


def lower_by(a: Row, b: Row) -> str:
    """'<a> is lower than <b> by d nats/char' or the reverse, from the two val losses."""
    d = b.result.loss - a.result.loss
    first, second = (a, b) if d > 0 else (b, a)
    return (
        f"{first.label} ({first.result.loss:.4f}) is lower than {second.label} "
        f"({second.result.loss:.4f}) by {abs(d):.4f} nats/char"
    )


def verdicts(rows: dict[str, Row]) -> tuple[str, str]:
    """The two plain statements: does the NeuralLM beat every count model; does the mixture beat both parts."""
    neural, mixture, kn = rows["neural_lm"], rows["mixture"], rows["best_count"]
    counts = [r for r in rows.values() if r.kind in COUNT_KINDS]
    best = min(counts, key=lambda r: r.result.loss)
    beats = all(neural.result.loss < r.result.loss for r in counts)
    first = (
        f"**Does the trained NeuralLM beat every count model? {'Yes' if beats else 'No'}.** Its val loss "
        f"is {neural.result.loss:.4f} nats/char (perplexity {neural.result.perplexity:.3f}); the best "
        f"count model, {best.label}, has {best.result.loss:.4f} (perplexity {best.result.perplexity:.3f}): "
        f"the NeuralLM is {'lower' if beats else 'higher'} by "
        f"{abs(best.result.loss - neural.result.loss):.4f} nats/char."
    )
    below = [r for r in (neural, kn) if mixture.result.loss < r.result.loss]
    answer = "Yes" if len(below) == 2 else ("No" if not below else f"Only {below[0].label}")
    second = (
        f"**Does the mixture beat both its parts? {answer}.** Mixture {mixture.result.loss:.4f} "
        f"nats/char (perplexity {mixture.result.perplexity:.3f}) vs the NeuralLM "
        f"{neural.result.loss:.4f} and {kn.label} {kn.result.loss:.4f}."
    )
    return first, second


def comparison_answers(rows: dict[str, Row], conv: list[dict], mixture: dict) -> list[str]:
    """Exercise 3.11's narrative, every figure taken from this run."""
    ranked = sorted(rows.values(), key=lambda r: r.result.loss)
    lines = [
        "- **Ranking** (val loss, lowest first): " + "; ".join(f"{r.label} {r.result.loss:.4f}" for r in ranked) + "."
    ]
    r = rows
    lines.append(
        f"- **More context helps the count models**: unigram {r['unigram'].result.loss:.4f} → "
        f"bigram {r['bigram_addk'].result.loss:.4f} → trigram {r['trigram_addk'].result.loss:.4f} "
        f"(add-k) → {r['best_count'].label} {r['best_count'].result.loss:.4f}."
    )
    lines.append(
        f"- **Smoothing at order 3**: {lower_by(r['trigram_kn'], r['trigram_addk'])}. Kneser-Ney "
        f"backs off to lower orders (with continuation counts) where add-k only flattens a row."
    )
    bigram_conv = conv[0]
    lines.append(
        f"- **Neural bigram vs counts**: on train the neural bigram reaches "
        f"{bigram_conv['table']:.4f} against the count bigram's {bigram_conv['count_mle']:.4f} "
        f"(gap {bigram_conv['table'] - bigram_conv['count_mle']:.2e}): trained to convergence it *is* "
        f"the count model. On val, {lower_by(r['neural_bigram'], r['bigram_addk'])}: the two differ "
        f"only in how they smooth (an L2 prior on the logits vs add-k)."
    )
    lines.append(
        f"- **Context 2**: {lower_by(r['neural_trigram'], r['trigram_addk'])}; "
        f"{lower_by(r['neural_trigram'], r['trigram_kn'])}. A free table per context cannot share "
        f"anything between contexts, so it gains nothing over smoothed counts; sharing comes from "
        f"embeddings and hidden layers (the NeuralLM)."
    )
    lines.append(f"- **NeuralLM vs the best count model**: {lower_by(r['neural_lm'], r['best_count'])}.")
    lines.append(
        f"- **Mixture**: lambda = {mixture['lambda']:.2f} chosen on the {mixture['slice_positions']:,}-"
        f"character train slice; {lower_by(r['mixture'], r['neural_lm'])}; "
        f"{lower_by(r['mixture'], r['best_count'])}."
    )
    return lines


def results_table(rows: list[Row]) -> list[str]:
    lines = [
        "| model | context | how it was set | val loss (nats/char) | perplexity | bits/char |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        res = row.result
        lines.append(
            f"| {row.label} | {row.model.context} | {row.setting} | {res.loss:.4f} | "
            f"{res.perplexity:.3f} | {res.bpc:.4f} |"
        )
    return lines


def convergence_section(conv: list[dict]) -> list[str]:
    lines = [
        "| context | distinct contexts | count model (MLE) train loss | table form | gap | "
        "factored form (E = V − 1) | gap |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in conv:
        lines.append(
            f"| {c['context']} | {c['distinct_contexts']:,} | {c['count_mle']:.4f} | {c['table']:.4f} | "
            f"{c['table'] - c['count_mle']:.2e} | {c['factored']:.4f} | "
            f"{c['factored'] - c['count_mle']:.2e} |"
        )
    bigram_gap = conv[0]["table"] - conv[0]["count_mle"]
    verdict = "met" if abs(bigram_gap) <= AGREEMENT else "not met: raise --fit-steps"
    steps = conv[0]["steps"]
    return lines + [
        "",
        f"The neural bigram (table form) and the count bigram agree to {abs(bigram_gap):.2e} "
        f"nats/char on train; the requirement is {AGREEMENT:g}: **{verdict}**.",
        "",
        f"All fits: {steps} full-batch Adam steps (cosine decay) on the count tables, no "
        f"regularisation. Why they meet, and why the factored context-2 form cannot: "
        f"`docs/neural_bigram.md`.",
    ]


def sweep_section(results: dict | None, note: str, png: Path | None) -> list[str]:
    if results is None:
        return [note]
    lines = [
        "| context | fusion | NeuralLM val loss | perplexity | modified KN | val loss | perplexity |",
        "|---:|---|---:|---:|---|---:|---:|",
    ]
    for row in results["rows"]:
        n, g = row["neural"], row["ngram"]
        ngram_cells = f"order {g['order']} | {g['val_loss']:.4f} | {g['val_ppl']:.3f}" if g else "n/a | | "
        lines.append(
            f"| {row['context']} | {n['fusion'] or 'flat'} | {n['val_loss']:.4f} | {n['val_ppl']:.3f} | {ngram_cells} |"
        )
    if png is not None:
        lines += ["", f"![perplexity against context]({png.name})"]
    return lines + [""] + context_answers(results)


def samples_section(quality: dict[str, dict], temperature: float, seed: int, length: int) -> list[str]:
    lines = [
        f"Every model sampled {length} characters after a newline at temperature {temperature:g} with "
        f"seed {seed} (one sampling loop, `torch_lm.reports.models.sample`). Words: lower-cased runs of "
        f"letters; *in train* is the share of generated words that occur in the training text; "
        f"distinct-n is the share of distinct word n-grams.",
        "",
        "| model | words | in train | distinct-1 | distinct-2 |",
        "|---|---:|---:|---:|---:|",
    ]
    for q in quality.values():
        lines.append(
            f"| {q['label']} | {q['words']} | {q['in_train_words']:.3f} | {q['distinct_1']:.3f} | "
            f"{q['distinct_2']:.3f} |"
        )
    lines += ["", "![generation quality](generation_quality.png)", ""]
    for q in quality.values():
        lines += [
            f"**{q['label']}** (first {min(SHOWN_CHARS, len(q['text']))} characters)",
            "",
            markdown_code_block(q["text"][:SHOWN_CHARS]),
            "",
        ]
    return lines


def dynamic_section(rows: list[Row], info: dict, static: dict[str, Row]) -> list[str]:
    """The dynamic rows' table, beside the static figures they start from, and how they were set."""
    lines = [
        "Each prediction still uses only the characters before it, but the models learn from the val "
        "text already scored: the NeuralLM takes a gradient step on every segment after scoring it "
        "(`python scripts/evaluate.py --dynamic`), the KN model is refitted on train plus the val "
        "text scored so far. Settings and weights were chosen on the train slice by the models "
        "fitted without it; slice loss per setting: "
        + "; ".join(f"{name} {loss:.4f}" for name, loss in info["slice_losses"].items())
        + ".",
        "",
        "| model (dynamic) | how it was set | val loss (nats/char) | perplexity | bits/char | static figure |",
        "|---|---|---:|---:|---:|---:|",
    ]
    starts = {"neural_lm_dynamic": "neural_lm", "kn_growing": "best_count", "mixture_dynamic": "mixture_context"}
    for row in rows:
        res, before = row.result, static[starts[row.key]].result
        lines.append(
            f"| {row.label} | {row.setting} | {res.loss:.4f} | {res.perplexity:.3f} | {res.bpc:.4f} | "
            f"{before.loss:.4f} |"
        )
    return lines


def build_report(ctx: dict) -> str:
    """REPORT.md from the computed results in ``ctx`` (see ``compare``)."""
    rows, by_key = ctx["rows"], {r.key: r for r in ctx["rows"]}
    first, second = verdicts(by_key)
    out = [
        "# torch-lm: every model on the held-out protocol",
        "",
        f"Regenerate with `{ctx['command']}` (deterministic on the CPU). Text: {len(ctx['data'].text):,} "
        f"characters, sha256 `{ctx['sha256'][:16]}…`, {len(ctx['data'].vocab)}-character vocabulary; "
        f"train {len(ctx['data'].train):,} / val {len(ctx['data'].val):,} characters (docs/DESIGN.md §3). "
        f"NeuralLM checkpoint: `{ctx['checkpoint']}`.",
        "",
        "## Summary",
        "",
        first,
        "",
        second,
        "",
        "## Perplexity comparison (Exercise 3.11)",
        "",
        "Held-out protocol (docs/DESIGN.md §3): mean −ln p(val[i] | preceding characters) over every one of "
        "the val positions, a model with context C taking the C characters before each one (reaching "
        "back into the end of train for the first ones); perplexity = e^loss, bits/char = loss / ln 2. "
        "Hyperparameters marked *train slice* were chosen on the last 5 % of the train text with the "
        "model fitted on the rest, then refitted on all of train: val is never used for a choice.",
        "",
    ]
    out += results_table(rows)
    mix = ctx["mixture"]
    out += ["", "### Dynamic evaluation (its own rows)", ""]
    out += dynamic_section(ctx["dynamic_rows"], ctx["dynamic"], by_key)
    out += [
        "",
        "### The NeuralLM + Kneser-Ney mixture",
        "",
        f"p = λ p_NeuralLM + (1 − λ) p_KN. λ = {mix['lambda']:.2f} minimises the loss on the "
        f"{mix['slice_positions']:,}-character train slice (slice loss {mix['slice_loss']:.4f}), with "
        f"the KN model fitted on train *without* the slice; on val the KN model is refitted on all of "
        f"train. The NeuralLM that tunes λ is the same recipe trained with the slice held out of its "
        f"batches (`{DEFAULT_TUNING_CHECKPOINT}`, `--holdout-tail`), so neither part has seen the slice; "
        f"on val λ mixes the NeuralLM and KN of the full train text. For information "
        f"only (not used): the λ that would be best on val is {mix['val_optimal_lambda_for_information']:.2f} "
        f"(val loss {mix['val_loss_at_that_lambda']:.4f}).",
        "",
        "The second mixture's λ depends on the context: λ = sigmoid(w_m + w_n H(p_NeuralLM) + w_k "
        "H(p_KN)), where m is how many of the last 6 characters the KN model has seen as a context "
        "and H are the two predictions' entropies; nothing about the character being predicted enters "
        "it. The weights are fitted on the train slice by the same two models fitted without it "
        f"(w = {', '.join(f'{w:.2f}' for w in ctx['context_mixture']['weights'])}).",
        "",
        "## Neural bigram mini-project: gradient training meets the count model",
        "",
        "Train loss (nats/char) on the train text of the count model's maximum-likelihood estimate and of "
        "the two neural forms trained on it with the count trick (the whole-text loss is "
        "Σ count(a,b)·(−log p(b|a)) / N, so training on the count table is exact full-batch gradient "
        "descent):",
        "",
    ]
    out += convergence_section(ctx["convergence"])
    out += ["", "## Context length (Exercise 3.10)", ""]
    out += sweep_section(ctx["sweep"], ctx["sweep_note"], ctx["sweep_png"])
    out += ["", "## Comparison (Exercise 3.11)", ""] + comparison_answers(by_key, ctx["convergence"], mix)
    out += ["", "## Training curves", ""]
    out += (
        ["![loss curves](loss_curves.png)"]
        if ctx["curves"]
        else [f"No TensorBoard event files next to the checkpoint (`{Path(ctx['checkpoint']).parent.as_posix()}`)."]
    )
    out += ["", "## Samples and generation quality", ""]
    out += samples_section(ctx["quality"], ctx["temperature"], ctx["seed"], ctx["sample_length"])
    out += ["## Character embeddings (Exercise 3.9)", ""]
    out += ctx["embedding_lines"]
    return "\n".join(out).rstrip() + "\n"


def embedding_lines(out_dir: Path, regenerated: bool) -> list[str]:
    names = [name for name in ("embeddings_pca.png", "embeddings_tsne.png") if (out_dir / name).is_file()]
    if not names:
        return [
            "No embedding plots in this directory: run `python scripts/plot_embeddings.py` "
            "(or `python scripts/compare.py --all`)."
        ]
    origin = (
        "Drawn from the checkpoint's embedding by this run"
        if regenerated
        else "Found next to the report (not redrawn by this run; `--all` redraws them)"
    )
    return [
        f"{origin}: PCA by SVD (`numpy_ref/projection.py`) and scikit-learn's exact t-SNE (PCA start, "
        f'learning rate "auto"; the title gives its final KL and the NumPy reference t-SNE\'s on the same '
        f"points), coloured by vowels, consonants, capitals, digits, punctuation and whitespace.",
        "",
    ] + [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})" for name in names]
