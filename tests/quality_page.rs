//! The report page in a real browser: Debian's headless Chromium renders
//! `<model>.report.html`, its DOM has one point per type in each chart,
//! the budget lines and the chosen type, and a screenshot is not blank and
//! shows the chosen marker's colour.

mod support;

use kvant::quality::{Budget, MeasuredType, QualityReport, TypeQuality, VersionPoint};

fn measured(
    name: &str,
    bpw: f64,
    kld: f64,
    ppl: f64,
    budget: &Budget,
    chosen: bool,
) -> MeasuredType {
    let quality = TypeQuality {
        file_type: name.into(),
        size: (bpw * 1_000_000.0 / 8.0) as u64,
        bits_per_weight: bpw,
        ppl,
        ppl_base: 35.31,
        kld_mean: kld,
        kld_p99: kld * 9.0,
        same_top_p: 1.0 - kld * 2.0,
        rms_dp: kld.sqrt() / 3.0,
        n_tokens: 2040,
    };
    let verdict = budget.judge(&quality);
    MeasuredType {
        published: verdict.passes(),
        chosen,
        verdict,
        quality,
    }
}

/// nanogpt-k256's figures from the fixtures README (llama.cpp's quantizer,
/// held-out PPL), with KLDs of the order these models show.
fn report() -> QualityReport {
    let budget = Budget {
        max_kld: 0.004,
        max_ppl_increase: 1.0,
    };
    let types = vec![
        measured("q2_k", 4.37, 0.0310, 35.332 * 1.02, &budget, false),
        measured("q3_k_m", 5.30, 0.0082, 35.286, &budget, false),
        measured("q4_k_m", 5.99, 0.0031, 35.308, &budget, true),
        measured("q6_k", 7.21, 0.0011, 35.294, &budget, false),
        measured("q8_0", 9.10, 0.0002, 35.316, &budget, false),
    ];
    QualityReport {
        model: "nanogpt-k256".into(),
        version: Some("3000".into()),
        text: "heldout.txt".into(),
        n_tokens: 2040,
        ppl_base: 35.31,
        budget,
        imatrix_text: Some("train.txt".into()),
        types,
        candidates: vec![],
        history: ["1000", "2000", "3000"]
            .iter()
            .zip([61.2, 40.8, 35.31])
            .map(|(v, ppl)| VersionPoint {
                version: v.to_string(),
                ppl,
                best: *v == "3000",
            })
            .collect(),
    }
}

#[test]
fn the_report_page_renders_in_chromium_with_a_point_per_type_and_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("nanogpt-k256.report.html");
    let html = report().render_html();
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "the page must be self-contained: found {external}"
        );
    }
    std::fs::write(&page, &html).expect("write page");
    let url = format!("file://{}", page.display());

    let dom = support::browser::browse(&dir.path().join("p1"), &["--dump-dom".into(), url.clone()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let charts: Vec<&str> = dom.split("<svg").skip(1).collect();
    assert_eq!(charts.len(), 3, "KLD, PPL and history charts:\n{dom}");
    for chart in &charts[..2] {
        assert_eq!(
            chart.matches("<g class=\"point").count(),
            5,
            "one point per type"
        );
        assert_eq!(
            chart.matches("class=\"point published chosen\"").count(),
            1,
            "the chosen type"
        );
        assert!(chart.contains("<line class=\"budget\""), "the budget line");
    }
    // With this budget only Q4_K_M, Q6_K and Q8_0 pass.
    assert_eq!(charts[0].matches("class=\"point published").count(), 3);
    assert_eq!(charts[0].matches("class=\"point over\"").count(), 2);
    assert_eq!(charts[2].matches("<g class=\"point version").count(), 3);
    assert!(charts[2].contains("3000 (best)"));
    assert!(dom.contains("<table class=\"types\">"));

    let shot = dir.path().join("shot.png");
    support::browser::browse(
        &dir.path().join("p2"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1300,1400".into(),
            url,
        ],
    );
    // KVANT_PAGE_SHOT=FILE keeps the screenshot, to look at by eye.
    if let Some(keep) = std::env::var_os("KVANT_PAGE_SHOT") {
        std::fs::copy(&shot, keep).expect("copy screenshot");
    }
    let pixels = support::browser::screenshot_pixels(&shot);
    use support::browser::{ink, near, GOLD};
    let ink = ink(&pixels);
    assert!(
        ink * 200 > pixels.len(),
        "the screenshot is nearly blank: {ink} of {} pixels",
        pixels.len()
    );
    // The chosen marker's gold is on screen, and the budget's red dashes.
    let gold = near(&pixels, GOLD, 12);
    assert!(
        gold > 30,
        "the chosen point is not drawn ({gold} gold pixels)"
    );
    let red = near(&pixels, [0xc0, 0x39, 0x2b], 14);
    assert!(red > 30, "the budget line is not drawn ({red} red pixels)");
}
