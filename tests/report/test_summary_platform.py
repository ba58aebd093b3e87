"""summary.md says where its numbers were made, and a one-seed study says what its intervals leave out."""

from kmx_eval.report.summary import ONE_SEED_NOTE, summary_markdown


def test_one_seed_sentences_say_their_interval_leaves_training_variation_out():
    text = summary_markdown("t", {"shapes": "S.", "digits": "D."}, {"shapes": "C."}, n_seeds=1)
    assert text.count(ONE_SEED_NOTE) == 2 and "leave training variation out" in ONE_SEED_NOTE
    assert text.index("C.") < text.index(ONE_SEED_NOTE) < text.index("## digits")


def test_several_seeds_need_no_note_and_the_platform_line_is_shown():
    text = summary_markdown("t", {"shapes": "S."}, {}, n_seeds=3, platform="AMD EPYC, AVX2 kernels")
    assert ONE_SEED_NOTE not in text
    assert "Made on: AMD EPYC, AVX2 kernels." in text
    assert summary_markdown("t", {"shapes": "S."}, {}) == summary_markdown("t", {"shapes": "S."}, {}, n_seeds=None)


def test_the_report_header_names_the_platform():
    from kmx_eval.report import html

    ctx = html.ReportContext(title="t", overview=[], combinations=["B4"], seeds=[0], fidelity_metric="M",
                             explainer="margin", sections=[], tables=[], settings_text="",
                             params_text="", versions={}, device="cpu")
    assert 'id="platform"' not in html.render_report(ctx)
    ctx.platform = "AMD EPYC, AVX2 kernels (portable numerics)"
    page = html.render_report(ctx)
    assert '<p id="platform">Made on: AMD EPYC, AVX2 kernels (portable numerics)</p>' in page
    assert "<dt>platform</dt>" in page
