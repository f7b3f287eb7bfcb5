"""Demo section "Can explanations be trusted?": explanation attacks and the β-smoothing defence."""

from __future__ import annotations

from segxai.attack import AttackConfig
from segxai.attack.figures import plot_attack, plot_success_rates
from segxai.attack.study import StudyConfig, robustness_study
from segxai.core.adapter import adapt
from segxai.report.context import DemoContext
from segxai.report.html import Section, escape, figure_to_html, table_html

ORDER = 40
TITLE = "Can explanations be trusted?"

_COLUMNS = ["method", "images", "success_rate", "defended_success_rate", "clean_target_pearson",
            "target_pearson", "original_pearson", "pixel_agreement", "linf_255", "psnr",
            "seconds"]
_TRANSFER_COLUMNS = ["method", "from", "images", "clean_target_pearson", "target_pearson",
                     "moved", "original_pearson", "success_rate", "seconds"]


def _config(quick: bool) -> tuple[StudyConfig, int]:
    if quick:
        attack = AttackConfig(iterations=40, lr=2e-2, eval_every=10)
        return StudyConfig(methods=("gradient",), transfer_methods=(), attack=attack,
                           explainer_params={"smoothgrad": {"n_samples": 4}}), 1
    attack = AttackConfig(iterations=100, lr=2e-2, eval_every=10)
    return StudyConfig(methods=("gradient", "smoothgrad", "seg-grad-cam"), attack=attack,
                       transfer_methods=None,
                       explainer_params={"smoothgrad": {"n_samples": 4}},
                       attack_overrides={"smoothgrad": {"iterations": 40}}), 2


def build(ctx: DemoContext) -> Section:
    """Attack each explainer on a few demo images and report success rates."""
    cfg, n_images = _config(ctx.quick)
    images = ctx.images[:n_images].to(ctx.device)
    res = robustness_study(ctx.model, images, cfg, progress=ctx.progress, device=ctx.device,
                           seed=ctx.seed)
    a = cfg.attack
    parts = [
        "<p>An explanation attack (Dombrowski et al., NeurIPS 2019; for segmentation Gipiškis "
        "et al., IEEE Systems Journal 2023) looks for an imperceptible change of the input that "
        "keeps the segmentation but moves the explanation to a target chosen in advance, here "
        f"the clean map <b>{escape(cfg.target_kind)}ed</b> by a quarter of the image. The loss "
        "is λ<sub>e</sub>‖h(x′) − h<sub>t</sub>‖² + λ<sub>o</sub>‖P(x′) − P(x)‖² + "
        "λ<sub>p</sub>‖x′ − x‖² (maps normalised to sum 1, P the softmax map), minimised with "
        f"Adam for {a.iterations} steps inside an L∞ ball of ε = {a.epsilon * 255:.0f}/255, "
        f"with every ReLU replaced by Softplus(β), β = {a.beta_start:g} → {a.beta_end:g}; the "
        "result is evaluated on the original ReLU network. A <b>success</b> is a Pearson "
        f"correlation with the target of at least {a.success_pearson:g} while at least "
        f"{a.min_agreement:.0%} of the pixels keep their predicted class. The β-smoothing "
        f"defence explains with the Softplus(β = {cfg.defence_beta:g}) network instead "
        "(here evaluated on the same adversarial images: a non-adaptive attacker)."
        + "".join(f" {escape(m)}: {escape(o)}, parameters {escape(cfg.explainer_params.get(m, {}))}."
                  for m, o in cfg.attack_overrides.items()) + "</p>",
        table_html(res.summary["attacked"], [c for c in _COLUMNS
                                             if any(c in r for r in res.summary["attacked"])],
                   caption="Attacked explainers (means over images)"),
    ]
    if res.summary["transferred"]:
        parts.append(table_html(
            res.summary["transferred"], _TRANSFER_COLUMNS,
            caption="Perturbation explainers on the adversarial images of the gradient attack "
                    "(moved = gain in Pearson correlation with their own shifted map)"))
    if ctx.quick:
        parts.append("<p class='note'>Quick mode: one image, the gradient only, few steps; "
                     "the numbers are not representative.</p>")
    fig = plot_success_rates(res.summary["attacked"], "attack success rate")
    parts.append(figure_to_html(fig, "Left: success rate per explainer, without and with the "
                                     "β-smoothing defence. Right: mean Pearson correlation of "
                                     "the map with the target, clean, attacked and attacked "
                                     "under the defence",
                                save_to=ctx.figures_dir / "attack_success.png"))
    adapter = adapt(ctx.model)
    for method, r in res.examples.items():
        fig = plot_attack(adapter.to_pixels(images[:1].cpu())[0],
                          adapter.to_pixels(r.x_adv[:1].cpu())[0], r.original_map[0],
                          r.target_map[0], r.adversarial_map[0], r.pred_original[0],
                          r.pred_adversarial[0], len(ctx.class_names),
                          title=f"{method}: target r {r.metrics['target_pearson'][0]:.2f}, "
                                f"agreement {r.metrics['pixel_agreement'][0]:.4f}")
        parts.append(figure_to_html(fig, f"{method}: clean map, target, attacked map and both "
                                         "predictions",
                                    save_to=ctx.figures_dir / f"attack_{method}.png"))
    data = {"summary": res.summary, "config": res.config, "seconds": res.seconds}
    return Section(TITLE, "\n".join(parts), data=data, order=ORDER)
