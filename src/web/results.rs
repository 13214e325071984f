//! A finished run brought back from the browser's store after a reload or a crash (`www/store.js` keeps the
//! label maps and the report), so that its exports work again without running the model.

use wasm_bindgen::prelude::*;

use super::js_err;
use super::state::{self, FinishedRun};

/// Makes `labels` (slice-major label maps of the loaded volume, concatenated) and `report` (the JSON the run
/// returned) the run the exports write. The labels must fit the loaded volume and use only the report's
/// classes: a store entry from another volume or a damaged one is refused, and nothing changes.
#[wasm_bindgen]
pub fn restore_run(labels: Vec<u8>, report: String) -> Result<(), JsError> {
    let loaded = state::loaded_volume()?;
    let v = &loaded.volume;
    let area = v.width * v.height;
    if labels.len() != area * v.depth {
        return Err(JsError::new(&format!(
            "the kept results hold {} labels, the volume {}x{}x{} needs {}",
            labels.len(), v.width, v.height, v.depth, area * v.depth
        )));
    }
    let report: serde_json::Value = serde_json::from_str(&report).map_err(|e| js_err(format!("the kept report is not JSON: {e}")))?;
    let classes = report_classes(&report)?;
    if let Some(bad) = labels.iter().find(|&&l| l != 0 && !classes.contains(&l)) {
        return Err(JsError::new(&format!("the kept results hold label {bad}, not one of the report's classes {classes:?}")));
    }
    let labels = labels.chunks(area).map(<[u8]>::to_vec).collect();
    state::with_mut(|s| s.finished = Some(FinishedRun { volume: loaded, labels, classes, report }));
    Ok(())
}

fn report_classes(report: &serde_json::Value) -> Result<Vec<u8>, JsError> {
    let classes = report.get("classes").and_then(|c| c.as_array()).ok_or_else(|| JsError::new("the kept report lists no classes"))?;
    classes
        .iter()
        .map(|c| c.as_u64().filter(|&c| (1..=255).contains(&c)).map(|c| c as u8))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| JsError::new("the kept report's classes are not label values 1-255"))
}
