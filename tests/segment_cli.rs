//! `memseg segment` and `memseg eval` end to end, through the built binary on the Flex CPU backend:
//! - the logits written for Meta's video-predictor fixtures match Meta's (the memory issue's tolerance), from
//!   masks (`--mask`), clicks (`--points`) and a box (`--box`);
//! - a synthetic CT volume (NIfTI, known labels) goes through `segment` and `eval`, and the outputs' geometry
//!   and reports are checked against the inputs;
//! - bad inputs give a clear error naming the file, a non-zero exit, no panic and no output folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{VideoFixture, fixtures, max_abs_diff, std_dev};

/// The memory issue's tolerance on mask logits: 1e-3 x the reference's standard deviation.
const LOGITS_TOL: f32 = 1e-3;

fn memseg(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_memseg")).arg("--backend").arg("flex").args(args).output().expect("run memseg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "memseg panicked: {stderr}");
    out
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memseg-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    (npy.shape().to_vec(), npy.into_vec::<f32>().unwrap())
}

/// The fixture's frames as PNG files and its mask prompt as a 0/255 PNG; returns the CLI arguments.
fn fixture_inputs(fx: &VideoFixture, dir: &Path) -> Vec<String> {
    let (shape, pixels) = fx.tensor("frames_u8").unwrap();
    let [n, h, w, _] = shape[..] else { panic!() };
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for f in 0..n {
        let bytes: Vec<u8> = pixels[f * h * w * 3..(f + 1) * h * w * 3].iter().map(|&v| v as u8).collect();
        image::RgbImage::from_raw(w as u32, h as u32, bytes).unwrap().save(frames.join(format!("f{f:03}.png"))).unwrap();
    }
    let checkpoint = fixtures().join(fx.meta["checkpoint"].as_str().unwrap());
    let mut args = vec!["segment".into(), "--weights".into(), s(&checkpoint).into(), "--frames".into(), s(&frames).into()];
    let mut clicked = std::collections::HashSet::new();
    for prompt in fx.meta["prompts"].as_array().unwrap() {
        let frame = prompt["frame"].as_u64().unwrap() as usize;
        let numbers = |key: &str| -> Vec<String> { prompt[key].as_array().unwrap().iter().map(|v| v.to_string()).collect() };
        let round = prompt.get("round").and_then(|r| r.as_u64()).unwrap_or(0);
        let target = format!("{frame}@{round}");
        match prompt["kind"].as_str().unwrap() {
            "mask" => {}
            "box" => {
                args.extend(["--box".into(), format!("{target}={}", numbers("box").join(","))]);
                continue;
            }
            "points" => {
                // The CLI appends a slice's clicks one call at a time, clearing only before the first.
                assert_eq!(prompt["clear_old_points"].as_bool().unwrap(), clicked.insert((frame, round)), "a fixture the CLI can express");
                let points: Vec<[f32; 2]> = serde_json::from_value(prompt["points"].clone()).unwrap();
                let labels: Vec<i32> = serde_json::from_value(prompt["labels"].clone()).unwrap();
                assert_eq!(points.len(), 1, "one click per call, as the CLI replays them");
                args.extend(["--points".into(), format!("{target}={},{},{}", points[0][0], points[0][1], labels[0])]);
                continue;
            }
            other => panic!("unknown prompt kind {other}"),
        }
        let (_, mask) = fx.tensor(&format!("prompt.{frame}.mask")).unwrap();
        let path = dir.join(format!("mask{frame}.png"));
        // Label 1, the class clicks take when they name none (a 0/255 mask would be class 255).
        let pixels = mask.iter().map(|&v| u8::from(v > 0.5)).collect();
        image::GrayImage::from_raw(w as u32, h as u32, pixels).unwrap().save(&path).unwrap();
        args.extend(["--mask".into(), format!("{frame}={}", s(&path))]);
    }
    for o in fx.meta["hydra_overrides_extra"].as_array().unwrap() {
        args.push(format!("--override={}", o.as_str().unwrap()));
    }
    args
}

#[test]
fn segment_logits_match_metas_video_predictor() {
    let names = ["tiny21_reduced_128.mid", "tiny21_reduced_256.mid", "tiny20_reduced_128.mid", "tiny21_reduced_128.click", "tiny21_reduced_128.box", "tiny21_reduced_128.correct"];
    for name in names {
        let fx = VideoFixture::open(&fixtures().join(format!("{name}.video.safetensors")));
        let dir = scratch(name);
        let out = dir.join("out");
        let mut args = fixture_inputs(&fx, &dir);
        args.extend(["--out".into(), s(&out).into(), "--save-logits".into()]);
        let run = memseg(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));

        // Meta's last output of each frame (a prompted frame is yielded by both passes, identically).
        let mut expected = vec![None; fx.num_frames()];
        let mut step = 0;
        for pass in fx.meta["passes"].as_array().unwrap() {
            for frame in pass["order"].as_array().unwrap() {
                expected[frame.as_u64().unwrap() as usize] = fx.tensor(&format!("out.{step}.pred_masks"));
                step += 1;
            }
        }
        let mut worst = 0f32;
        for (f, reference) in expected.iter().enumerate() {
            let (rshape, reference) = reference.clone().unwrap_or_else(|| panic!("{name}: no output for frame {f}"));
            let (shape, ours) = read_npy(&out.join(format!("f{f:03}.logits.npy")));
            assert_eq!(shape, rshape[2..].iter().map(|&d| d as u64).collect::<Vec<_>>(), "{name} frame {f}: logits shape");
            let err = max_abs_diff(&ours, &reference) / std_dev(&reference);
            worst = worst.max(err);
            // The PNG mask is the logits upsampled to the frame and > 0: same size as the frame.
            let mask = image::open(out.join(format!("f{f:03}.png"))).unwrap().to_luma8();
            let frame = image::open(dir.join("frames").join(format!("f{f:03}.png"))).unwrap();
            assert_eq!(mask.dimensions(), (frame.width(), frame.height()), "{name} frame {f}: mask size");
        }
        eprintln!("{name}: worst logits error {worst:.2e} x std over {} frames", expected.len());
        assert!(worst <= LOGITS_TOL, "{name}: logits off by {worst:.2e} x std");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["complete"], true);
        let order: Vec<usize> = serde_json::from_value(report["order"].clone()).unwrap();
        let meta_order: Vec<usize> = fx.meta["passes"].as_array().unwrap().iter().flat_map(|p| serde_json::from_value::<Vec<usize>>(p["order"].clone()).unwrap()).collect();
        assert_eq!(order, meta_order, "{name}: Meta's propagate_in_video order");
        let prompted = fx.meta["prompts"].as_array().unwrap().iter().filter(|p| p["kind"] != "mask").count();
        let clicks = report["prompts"].as_array().map_or(0, |p| p.iter().map(|p| p["clicks"].as_array().map_or(1, Vec::len)).sum());
        assert_eq!(clicks, prompted, "{name}: report.json lists the clicks and boxes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A NIfTI-1 file (`.nii`) written byte by byte from the format's specification, independent of our writer:
/// int16 values, the given spacing and an sform with a translation.
fn write_nifti_i16(path: &Path, dims: [usize; 3], spacing: [f32; 3], values: &[i16]) {
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in [3, dims[0], dims[1], dims[2], 1, 1, 1, 1].iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d as i16);
    }
    put_i16(&mut h, 70, 4); // datatype: int16
    put_i16(&mut h, 72, 16); // bitpix
    for (i, p) in [1.0, spacing[0], spacing[1], spacing[2], 1.0, 1.0, 1.0, 1.0].iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    put_i16(&mut h, 254, 1); // sform_code: scanner
    let srow = [[-spacing[0], 0.0, 0.0, 90.0], [0.0, spacing[1], 0.0, -120.0], [0.0, 0.0, spacing[2], 30.0]];
    for (r, row) in srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *v);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, h).unwrap();
}

/// A synthetic CT case: soft tissue (40 HU) in air (-1000), a bright "organ" ellipsoid (class 1, 200 HU) and a
/// dark one (class 2, -80 HU) whose sizes vary with z; returns (image HU, labels) in NIfTI order (x fastest).
fn synthetic_case(dims: [usize; 3], shift: f32) -> (Vec<i16>, Vec<i16>) {
    let [nx, ny, nz] = dims;
    let mut hu = vec![-1000i16; nx * ny * nz];
    let mut labels = vec![0i16; nx * ny * nz];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                let (fx, fy, fz) = (x as f32 / nx as f32, y as f32 / ny as f32, z as f32 / (nz - 1) as f32);
                let body = (fx - 0.5).powi(2) + (fy - 0.5).powi(2) < 0.2;
                let organ1 = ((fx - 0.35 - shift) / 0.15).powi(2) + ((fy - 0.45) / 0.2).powi(2) + ((fz - 0.5) / 0.45).powi(2) < 1.0;
                let organ2 = ((fx - 0.68) / 0.1).powi(2) + ((fy - 0.55 - shift) / 0.12).powi(2) + ((fz - 0.4) / 0.3).powi(2) < 1.0;
                if body {
                    hu[i] = 40;
                }
                if organ1 {
                    (hu[i], labels[i]) = (200, 1);
                }
                if organ2 {
                    (hu[i], labels[i]) = (-80, 2);
                }
            }
        }
    }
    (hu, labels)
}

fn reduced_overrides() -> Vec<String> {
    let fx = VideoFixture::open(&fixtures().join("tiny21_reduced_128.mid.video.safetensors"));
    fx.meta["hydra_overrides_extra"].as_array().unwrap().iter().map(|o| format!("--override={}", o.as_str().unwrap())).collect()
}

fn checkpoint() -> String {
    s(&fixtures().join("tiny21_reduced_256.pt")).to_string()
}

const DIMS: [usize; 3] = [48, 40, 9];
const SPACING: [f32; 3] = [0.8, 0.8, 2.5];

/// The slice of the synthetic case whose labels are drawn as the mask.
const MID: usize = 4;

/// A synthetic CT case in `dir`: `ct.nii` and `mid.png`, the labels of slice [`MID`] drawn as a mask (both
/// classes, x fastest as in the NIfTI); returns their paths and the case's labels.
fn case_with_mask(dir: &Path) -> (PathBuf, PathBuf, Vec<i16>) {
    let (hu, labels) = synthetic_case(DIMS, 0.0);
    let image = dir.join("ct.nii");
    write_nifti_i16(&image, DIMS, SPACING, &hu);
    let [nx, ny, _] = DIMS;
    let drawn: Vec<u8> = labels[MID * nx * ny..(MID + 1) * nx * ny].iter().map(|&v| v as u8).collect();
    let mask = dir.join("mid.png");
    image::GrayImage::from_raw(nx as u32, ny as u32, drawn).unwrap().save(&mask).unwrap();
    (image, mask, labels)
}

#[test]
fn segment_a_synthetic_ct_volume_end_to_end() {
    let dir = scratch("synthetic");
    let (image, mask, labels) = case_with_mask(&dir);
    let truth = dir.join("truth.nii");
    write_nifti_i16(&truth, DIMS, SPACING, &labels);
    let [nx, ny, _] = DIMS;
    let mid = MID;

    let out = dir.join("out");
    let mut args: Vec<String> = ["segment", "--weights", &checkpoint(), "--frames", s(&image), "--mask", &format!("{mid}={}", s(&mask))]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(["--truth", s(&truth), "--out", s(&out), "--save-logits", "--modality", "ct"].map(String::from));
    args.extend(reduced_overrides());
    let run = memseg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["complete"], true);
    assert_eq!(report["classes"], serde_json::json!([1, 2]));
    assert_eq!(report["input"]["intensity"]["low"], -125.0, "CT default window");
    assert_eq!(report["input"]["intensity"]["high"], 275.0);
    assert_eq!(report["frames_encoded"], 9, "each slice encoded once for both classes");
    let voxel_ml = SPACING.iter().map(|&s| f64::from(s)).product::<f64>() / 1000.0;
    // Label PNGs at the slice size; the report's areas are their pixel counts; the NIfTI holds the same labels.
    let written = nifti_labels(&out.join("labels.nii.gz"));
    for (c, class) in [1u8, 2].iter().enumerate() {
        let per_class = &report["per_class"][c];
        let mut voxels = 0;
        for z in 0..DIMS[2] {
            let png = image::open(out.join(format!("slice_{z:04}.png"))).unwrap().to_luma8();
            assert_eq!(png.dimensions(), (nx as u32, ny as u32));
            let area = png.pixels().filter(|p| p[0] == *class).count();
            assert_eq!(per_class["slices"][z]["area_pixels"], area, "class {class} slice {z}");
            assert_eq!(written[z * nx * ny..(z + 1) * nx * ny].iter().filter(|&&v| v == *class).count(), area);
            voxels += area;
            // Dice on the drawn slice: the mask is the output there (Meta's add_new_mask), so near 1.
            if z == mid {
                assert!(per_class["slices"][z]["dice"].as_f64().unwrap() > 0.9, "drawn slice {}", per_class["slices"][z]);
            }
            let (shape, _) = read_npy(&out.join(format!("slice_{z:04}.logits.npy")));
            assert_eq!(shape, vec![2, 32, 32], "[classes, S/4, S/4]");
        }
        assert_eq!(per_class["voxels"], voxels);
        let volume_ml = per_class["volume_ml"].as_f64().unwrap();
        assert!((volume_ml - voxels as f64 * voxel_ml).abs() <= 1e-9 * volume_ml.max(1.0), "{volume_ml} mL for {voxels} voxels");
        let dice = per_class["dice"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&dice));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_size_is_a_flag() {
    let dir = scratch("size");
    let (image, mask, _) = case_with_mask(&dir);
    let run = |size: &str, out: &Path| {
        let mut args: Vec<String> = ["segment", "--weights", &checkpoint(), "--frames", s(&image), "--mask", &format!("{MID}={}", s(&mask))]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(["--out", s(out), "--save-logits", "--modality", "ct", "--image-size", size].map(String::from));
        args.extend(reduced_overrides()); // the reduced model at 128; --image-size applies after them
        memseg(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = dir.join("out");
    let ok = run("256", &out);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let (shape, _) = read_npy(&out.join("slice_0000.logits.npy"));
    assert_eq!(shape, vec![2, 64, 64], "--image-size 256: logits at S/4 = 64");
    let bad = run("100", &dir.join("bad"));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("image_size 100 must be a positive multiple of 32"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The label NIfTI written by `segment`, read with the `nifti` crate (not our reader), checked to carry the
/// input's geometry; returns its values in file order.
fn nifti_labels(path: &Path) -> Vec<u8> {
    use nifti::{NiftiObject, ReaderOptions};
    let obj = ReaderOptions::new().read_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let h = obj.header();
    assert_eq!(&h.dim[..4], &[3, DIMS[0] as u16, DIMS[1] as u16, DIMS[2] as u16]);
    assert_eq!(&h.pixdim[1..4], &SPACING);
    assert_eq!(h.sform_code, 1);
    assert_eq!(h.srow_x, [-SPACING[0], 0.0, 0.0, 90.0]);
    assert_eq!(h.srow_z, [0.0, 0.0, SPACING[2], 30.0]);
    obj.into_volume().into_raw_data()
}

#[test]
fn external_supports_from_another_case_in_both_modes() {
    let dir = scratch("supports");
    let (hu, _) = synthetic_case(DIMS, 0.0);
    let image = dir.join("query.nii");
    write_nifti_i16(&image, DIMS, SPACING, &hu);
    // The support: the middle slice of another "patient" (shifted organs) as a PNG after windowing, and its labels.
    let (other_hu, other_labels) = synthetic_case(DIMS, 0.03);
    let [nx, ny, _] = DIMS;
    let z = 4;
    let window = |v: i16| ((f32::from(v) + 125.0) / 400.0 * 255.0).round().clamp(0.0, 255.0) as u8;
    let support = dir.join("support.png");
    let pixels: Vec<u8> = other_hu[z * nx * ny..(z + 1) * nx * ny].iter().map(|&v| window(v)).collect();
    image::GrayImage::from_raw(nx as u32, ny as u32, pixels).unwrap().save(&support).unwrap();
    let mask = dir.join("support_mask.png");
    let labels: Vec<u8> = other_labels[z * nx * ny..(z + 1) * nx * ny].iter().map(|&v| v as u8).collect();
    image::GrayImage::from_raw(nx as u32, ny as u32, labels).unwrap().save(&mask).unwrap();
    for (mode, at, encoded) in [("propagate", "2", 10), ("supports-only", "middle", 10)] {
        let out = dir.join(mode);
        let mut args: Vec<String> = ["segment", "--weights", &checkpoint(), "--frames", s(&image), "--modality", "ct"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(["--support".into(), format!("{}={}", s(&support), s(&mask)), "--support-at".into(), at.into()]);
        args.extend(["--mode".into(), mode.into(), "--classes".into(), "2".into(), "--out".into(), s(&out).into()]);
        args.extend(reduced_overrides());
        let run = memseg(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(run.status.success(), "{mode}: {}", String::from_utf8_lossy(&run.stderr));
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["classes"], serde_json::json!([2]), "{mode}: only the class asked for");
        assert_eq!(report["frames_encoded"], encoded, "{mode}: 9 slices and the support, each encoded once");
        let mut order: Vec<usize> = serde_json::from_value(report["order"].clone()).unwrap();
        if mode == "propagate" {
            // Inserted before slice 2: forward 2..8, then reverse 1, 0.
            assert_eq!(order, vec![2, 3, 4, 5, 6, 7, 8, 1, 0]);
        }
        order.sort_unstable();
        assert_eq!(order, (0..9).collect::<Vec<_>>());
        // One class: binary PNGs (0/255).
        let png = image::open(out.join("slice_0004.png")).unwrap().to_luma8();
        assert!(png.pixels().all(|p| p[0] == 0 || p[0] == 255));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_scores_a_synthetic_dataset() {
    let dir = scratch("eval");
    for (case, shift) in [("case_a", 0.0), ("case_b", 0.03), ("case_c", -0.03)] {
        let (hu, labels) = synthetic_case(DIMS, shift);
        for (sub, values) in [("images", &hu), ("labels", &labels)] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            write_nifti_i16(&dir.join(sub).join(format!("{case}.nii")), DIMS, SPACING, values);
        }
    }
    let json = dir.join("eval.json");
    let mut args: Vec<String> = ["eval", "--weights", &checkpoint(), "--dataset", s(&dir), "--modality", "ct", "--out", s(&json)]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(reduced_overrides());
    let run = memseg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("pooled Dice"), "the readable table: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["support_case"], "case_a");
    assert_eq!(report["classes"], serde_json::json!([1, 2]));
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.iter().map(|c| c["case"].as_str().unwrap()).collect::<Vec<_>>(), ["case_b", "case_c"]);
    // Query slices span the classes' union z-range of each case's ground truth.
    let (_, labels) = synthetic_case(DIMS, 0.03);
    let slice = DIMS[0] * DIMS[1];
    let labelled: Vec<usize> = (0..DIMS[2]).filter(|&z| labels[z * slice..(z + 1) * slice].iter().any(|&v| v > 0)).collect();
    assert_eq!(cases[0]["slices"], serde_json::json!([labelled[0], labelled[labelled.len() - 1]]));
    // Pooled Dice lies between the per-case Dice values (a ratio of sums is between the ratios).
    for c in 0..2 {
        let pooled = report["dice"][c].as_f64().unwrap();
        let per_case: Vec<f64> = cases.iter().map(|k| k["dice"][c].as_f64().unwrap()).collect();
        let (lo, hi) = (per_case.iter().cloned().fold(f64::MAX, f64::min), per_case.iter().cloned().fold(f64::MIN, f64::max));
        assert!(lo - 1e-12 <= pooled && pooled <= hi + 1e-12, "class {c}: pooled {pooled} outside {per_case:?}");
    }
    let mean = report["mean_dice"].as_f64().unwrap();
    assert!((mean - (report["dice"][0].as_f64().unwrap() + report["dice"][1].as_f64().unwrap()) / 2.0).abs() < 1e-12);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `segment` expecting a failure whose message names `culprit` and says `what`; no output folder.
fn refused(name: &str, extra: &[String], culprit: &str, what: &str) {
    let dir = scratch(&format!("{name}-run"));
    let out = dir.join("out");
    let mut args: Vec<String> = vec!["segment".into(), "--weights".into(), checkpoint()];
    args.extend(extra.iter().cloned());
    args.extend(["--out".into(), s(&out).into()]);
    args.extend(reduced_overrides());
    let run = memseg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{name}: should fail");
    assert!(stderr.contains(culprit) && stderr.contains(what), "{name}: message should name {culprit} and say {what}: {stderr}");
    assert!(!out.exists() && !dir.join(".out.partial").exists(), "{name}: no output folder after a failure");
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let dir = scratch("bad");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for f in 0..3 {
        image::RgbImage::from_pixel(32, 24, image::Rgb([f * 40, 90, 20])).save(frames.join(format!("f{f}.png"))).unwrap();
    }
    let save = |name: &str, w: u32, h: u32, f: &dyn Fn(u32, u32) -> u8| {
        let path = dir.join(name);
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)])).save(&path).unwrap();
        s(&path).to_string()
    };
    let good = save("good.png", 32, 24, &|x, y| if x > 10 && y > 8 { 255 } else { 0 });
    let small = save("small.png", 16, 24, &|x, _| if x > 4 { 255 } else { 0 });
    let empty = save("empty.png", 32, 24, &|_, _| 0);
    let grey = save("grey.png", 32, 24, &|x, y| ((x * 7 + y * 3) % 200) as u8);
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &std::fs::read(&good).unwrap()[..40]).unwrap();
    let broken_nifti = dir.join("broken.nii");
    std::fs::write(&broken_nifti, [&348i32.to_le_bytes()[..], &[0u8; 100]].concat()).unwrap();
    let fr = s(&frames).to_string();
    let args = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    refused("size", &args(&["--frames", &fr, "--mask", &format!("1={small}")]), "small.png", "16x24");
    refused("empty", &args(&["--frames", &fr, "--mask", &format!("1={empty}")]), "empty.png", "empty");
    refused("grey", &args(&["--frames", &fr, "--mask", &format!("1={grey}")]), "grey.png", "not a binary mask or label map");
    refused("truncated", &args(&["--frames", &fr, "--mask", &format!("1={}", s(&truncated))]), "truncated.png", "");
    refused("range", &args(&["--frames", &fr, "--mask", &format!("7={good}")]), "good.png", "out of range");
    refused("missing", &args(&["--frames", "/nonexistent/dir", "--mask", &format!("1={good}")]), "/nonexistent/dir", "");
    refused("nifti", &args(&["--frames", s(&broken_nifti), "--mask", &format!("1={good}")]), "broken.nii", "");
    refused("no prompt", &args(&["--frames", &fr]), "--mask", "");
    // Clicks and boxes (the slices are 32x24).
    refused("click off", &args(&["--frames", &fr, "--points", "1=32,5,1"]), "(32, 5)", "not inside the 32x24 slice");
    refused("box inverted", &args(&["--frames", &fr, "--box", "1=20,2,10,20"]), "box", "empty or inverted");
    refused("box empty", &args(&["--frames", &fr, "--box", "1=10,2,10,20"]), "box", "empty or inverted");
    refused("label", &args(&["--frames", &fr, "--points", "1=5,5,2"]), "--points", "the label is 2");
    refused("click range", &args(&["--frames", &fr, "--points", "7=5,5,1"]), "slice 7", "out of range");
    refused("class", &args(&["--frames", &fr, "--classes", "1", "--points", "1=5,5,1", "--points", "2:3=5,5,1"]), "class 3", "not among the classes");
    refused("two boxes", &args(&["--frames", &fr, "--box", "1=1,1,9,9", "--box", "1=2,2,8,8"]), "slice 1", "one box per slice");
    refused("supports-only", &args(&["--frames", &fr, "--mode", "supports-only", "--points", "2=5,5,1"]), "clicks", "propagate mode");
    // Corrections (rounds after the first) need something to correct and every tracked memory.
    refused("correction alone", &args(&["--frames", &fr, "--points", "1@1=5,5,1"]), "class 1", "a correction needs a mask to correct");
    refused("round", &args(&["--frames", &fr, "--points", "1@one=5,5,1"]), "round 'one'", "expected 0, 1, 2");
    let evicting = ["--frames", &fr, "--mask", &format!("1={good}"), "--points", "2:255@1=5,5,1", "--similarity-eviction"];
    refused("correction evicted", &args(&evicting), "corrections", "turn similarity eviction off");
    // The image given as its own ground truth: refused, as the page refuses it (values outside 0..=255 or not
    // whole are no labels), not rounded and clamped into labels.
    let image_as_truth = dir.join("image.nii");
    write_nifti_i16(&image_as_truth, [32, 24, 3], [1.0; 3], &vec![-1000i16; 32 * 24 * 3]);
    let truth_args = args(&["--frames", &fr, "--mask", &format!("1={good}"), "--truth", s(&image_as_truth)]);
    refused("truth", &truth_args, "image.nii", "whole values 0..=255");
    // Weights whose shapes do not fit the config: the wrong trunk width.
    let mut wrong = args(&["segment", "--weights", &checkpoint(), "--frames", &fr, "--mask", &format!("1={good}"), "--out", s(&dir.join("w"))]);
    wrong.extend(reduced_overrides());
    wrong.push("--override=++model.num_maskmem=5".into());
    let run = memseg(&wrong.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("tiny21_reduced_256.pt") && stderr.contains("does not fit"), "{stderr}");
    assert!(!dir.join("w").exists() && !dir.join(".w.partial").exists());
    // An existing output folder is not replaced without --overwrite.
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    let mut taken = args(&["segment", "--weights", &checkpoint(), "--frames", &fr, "--mask", &format!("1={good}"), "--out", s(&dir.join("taken"))]);
    taken.extend(reduced_overrides());
    let run = memseg(&taken.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("--overwrite"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_many_slices_are_refused_before_any_work() {
    let dir = scratch("long");
    let dims = [4, 4, 2049];
    let path = dir.join("long.nii");
    write_nifti_i16(&path, dims, [1.0; 3], &vec![0i16; 4 * 4 * 2049]);
    let mask = dir.join("m.png");
    image::GrayImage::from_fn(4, 4, |x, _| image::Luma([if x > 1 { 1 } else { 0 }])).save(&mask).unwrap();
    refused("long", &[ "--frames".into(), s(&path).into(), "--mask".into(), format!("0={}", s(&mask))], "long.nii", "2048");
    let _ = std::fs::remove_dir_all(&dir);
}
