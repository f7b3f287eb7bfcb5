"""The real-data report sections' statistics and generated text, on made-up AUCs (the
sections themselves run in ``tests/test_demo.py``'s quick demo)."""

from __future__ import annotations

import numpy as np

from segxai.report.sections._faithfulness import (
    RANDOM,
    MethodRun,
    compare_with_random,
    findings,
    interval_rows,
)


def _runs(n: int) -> list[MethodRun]:
    rng = np.random.default_rng(0)
    base_del = 0.5 + 0.05 * rng.standard_normal(n)
    base_ins = 0.5 + 0.05 * rng.standard_normal(n)
    return [
        MethodRun("good", {}, deletion=base_del - 0.3, insertion=base_ins + 0.2),
        MethodRun("bad", {}, deletion=base_del + 0.3, insertion=base_ins - 0.2),
        MethodRun("same", {}, deletion=base_del + 0.01 * rng.standard_normal(n),
                  insertion=base_ins + 0.01 * rng.standard_normal(n)),
        MethodRun("broken", {}, error="RuntimeError: no"),
        MethodRun(RANDOM, {}, deletion=base_del, insertion=base_ins),
    ]


def test_verdicts_and_rows_follow_the_numbers() -> None:
    runs = _runs(8)
    compare_with_random(runs)
    rows = {r["method"]: r for r in interval_rows(runs)}
    assert rows["good"]["vs random (deletion)"] == "better"
    assert rows["good"]["vs random (insertion)"] == "better"
    assert rows["bad"]["vs random (deletion)"] == "worse"
    assert rows["same"]["vs random (deletion)"] == "undecided"
    assert rows["broken"]["status"].startswith("FAILED: RuntimeError")
    assert "vs random (deletion)" not in rows[RANDOM]
    d = runs[0].comparison["deletion_vs_random"]
    assert d.p_value == 2.0 ** -8 and d.exact          # all 8 differences negative
    assert np.isclose(d.difference.estimate, -0.3)
    text = findings(runs, 8, "test images")
    assert text[0].startswith("Deletion (lower AUC is better): 1 of 3 methods beat")
    assert "(good)" in text[0] and "1 is worse than random (bad)" in text[0]
    assert "for the other 1 the interval includes zero" in text[0]
    assert "Lowest mean deletion AUC: good" in text[2]
    assert "cannot give p below 0.00391" in text[3]
    assert text[-1] == "Failed on test images: broken (see the table)."


def test_findings_say_when_few_images_cannot_be_significant() -> None:
    runs = _runs(3)
    compare_with_random(runs)
    text = " ".join(findings(runs, 3, "photos"))
    assert "Only 3 images" in text and "cannot give p below 0.125" in text
    assert "no difference can reach p < 0.05 here" in text


def test_brain_split_holds_out_one_contiguous_block() -> None:
    from segxai.report.sections.s16_brain_mri import _split

    train, val = _split(144)
    assert sorted(train + val) == list(range(144)) and not set(train) & set(val)
    assert val == list(range(val[0], val[-1] + 1)) and len(val) == 21  # slices 79-99


def test_real_model_section_reads_the_bundled_photographs() -> None:
    from segxai.data.real import PHOTOGRAPHS
    from segxai.report.sections.s15_real_model import PHOTOS, photographs

    assert set(PHOTOS) <= set(PHOTOGRAPHS) and len(set(PHOTOS)) == len(PHOTOS)
    assert PHOTOS[:3] == ("astronaut", "camera", "grace_hopper")   # quick: the people
    images, names = photographs(PHOTOS[:3], size=32)
    assert images.shape == (len(names), 3, 32, 32) and names == list(PHOTOS[:len(names)])
