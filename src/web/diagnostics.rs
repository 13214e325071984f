//! Diagnostics for the page's crash recovery (`www/rpc.js`, `www/app.js`): nothing here computes anything.

use wasm_bindgen::prelude::*;

/// Makes the core panic on purpose, with `message`. A diagnostic, reachable only through the worker's
/// `debugPanic` operation (the browser tests and the console use it): a real panic is the only faithful way to
/// check that the page restarts the worker, reloads the model and the volume and keeps the painted masks, since
/// after a panic the WebAssembly instance cannot be trusted and must be replaced.
#[wasm_bindgen]
pub fn debug_panic(message: String) {
    panic!("diagnostic panic requested by the page: {message}");
}
