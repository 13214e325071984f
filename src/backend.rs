//! Choosing the compute device. This is the only module that decides between wgpu and the Flex CPU backend;
//! everything else takes the [`Device`] it returns.
//!
//! Natively wgpu picks Vulkan, Metal or DX12; in the browser it is WebGPU. When no GPU adapter (wgpu's and
//! WebGPU's word for a physical device) can be had we fall back to Flex (pure Rust, works everywhere) and keep
//! the reason so the user can be told why. "Adapter" here is always the GPU's; the LW-Adapters of the
//! prompt-free path live in `sam2::adapter`.

use burn::tensor::Device;
use serde::Serialize;

/// What the user asked for on the command line or in the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preference {
    /// wgpu if an adapter is found, otherwise Flex.
    Auto,
    /// wgpu or an error.
    Wgpu,
    /// Flex, without touching the GPU.
    Flex,
}

impl std::str::FromStr for Preference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "flex" | "cpu" => Ok(Self::Flex),
            other => Err(format!("unknown backend '{other}': expected auto, wgpu or flex")),
        }
    }
}

/// Which backend runs the tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Wgpu,
    Flex,
}

/// The device the core computes on, and what the user should be told about it.
#[derive(Clone, Debug, Serialize)]
pub struct Compute {
    #[serde(skip)]
    pub device: Device,
    pub backend: BackendKind,
    /// The GPU adapter's name and graphics API for wgpu, `None` for Flex. Named `adapter` in the JSON, as
    /// WebGPU calls it (the page reads `device.adapter`).
    #[serde(rename = "adapter")]
    pub gpu_adapter: Option<GpuAdapterReport>,
    /// Why we are on the CPU fallback, when wgpu was wanted but could not be had.
    pub fallback_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuAdapterReport {
    pub name: String,
    pub graphics_api: String,
    pub device_type: String,
    /// The largest single storage buffer a shader may bind; big weights must be split below this.
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
}

impl Compute {
    pub fn flex(fallback_reason: Option<String>) -> Self {
        Self { device: Device::flex(), backend: BackendKind::Flex, gpu_adapter: None, fallback_reason }
    }

    fn wgpu(device: Device, setup: &burn::tensor::wgpu::WgpuSetup) -> Self {
        let info = setup.adapter.get_info();
        let limits = setup.adapter.limits();
        let gpu_adapter = GpuAdapterReport {
            name: info.name,
            graphics_api: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
            max_buffer_size: limits.max_buffer_size,
        };
        Self { device, backend: BackendKind::Wgpu, gpu_adapter: Some(gpu_adapter), fallback_reason: None }
    }

    /// One line for logs and the CLI.
    pub fn describe(&self) -> String {
        match (&self.gpu_adapter, &self.fallback_reason) {
            (Some(a), _) => format!("wgpu on {} ({}, {})", a.name, a.graphics_api, a.device_type),
            (None, Some(why)) => format!("Flex CPU fallback ({why})"),
            (None, None) => "Flex CPU".to_string(),
        }
    }
}

/// Native start-up: wgpu when asked and available, Flex otherwise.
#[cfg(not(target_family = "wasm"))]
pub fn init_native(pref: Preference) -> Result<Compute, String> {
    if pref == Preference::Flex {
        return Ok(Compute::flex(None));
    }
    // wgpu's adapter search can panic inside driver loaders on broken setups; treat that as "no adapter".
    let attempt = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
    let error = match attempt {
        // A software rasteriser (lavapipe/llvmpipe) is slower than Flex on the same cores: only on request.
        Ok(Ok((_, setup))) if pref == Preference::Auto && is_software(&setup) => {
            let name = setup.adapter.get_info().name;
            return Ok(Compute::flex(Some(format!("the only wgpu adapter, {name}, runs on the CPU; use --backend wgpu to force it"))));
        }
        Ok(Ok((device, setup))) => return Ok(Compute::wgpu(device, &setup)),
        Ok(Err(e)) => format!("no usable wgpu adapter: {e}"),
        Err(_) => "the wgpu adapter search panicked".to_string(),
    };
    match pref {
        Preference::Wgpu => Err(error),
        _ => Ok(Compute::flex(Some(error))),
    }
}

#[cfg(not(target_family = "wasm"))]
fn is_software(setup: &burn::tensor::wgpu::WgpuSetup) -> bool {
    setup.adapter.get_info().device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu
}

/// Browser start-up. `webgpu_reason` is `None` when the page found `navigator.gpu` and an adapter, otherwise
/// why not: wgpu must not even be tried then, since its initialisation panics without WebGPU.
pub async fn init_browser(pref: Preference, webgpu_unavailable: Option<String>) -> Result<Compute, String> {
    if pref == Preference::Flex {
        return Ok(Compute::flex(None));
    }
    let error = match webgpu_unavailable {
        Some(why) => why,
        None => match Device::wgpu_options().init_with_setup_async().await {
            Ok((device, setup)) => return Ok(Compute::wgpu(device, &setup)),
            Err(e) => format!("WebGPU device request failed: {e}"),
        },
    };
    match pref {
        Preference::Wgpu => Err(error),
        _ => Ok(Compute::flex(Some(error))),
    }
}

/// How many threads Flex's kernels share: rayon's pool natively, one in the browser (wasm without atomics).
pub fn cpu_threads() -> usize {
    #[cfg(not(target_family = "wasm"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(target_family = "wasm")]
    {
        1
    }
}
