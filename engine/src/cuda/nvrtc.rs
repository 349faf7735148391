//! Compiles [`super::KERNEL_SOURCE`] with NVRTC into a CUBIN for one architecture (`sm_XX`, the
//! card's own: no PTX JIT at load, and no dependence on the driver accepting NVRTC's PTX
//! version), and caches it on disk by (source hash, architecture, NVRTC version), so a worker
//! compiles once per machine.
//!
//! NVRTC needs no GPU and no driver: CI compiles every kernel for every supported architecture
//! with the `nvidia-cuda-nvrtc-cu12` wheel's libnvrtc, so a kernel that does not compile fails
//! CI (see `deploy/fetch-nvrtc.sh`).

use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};
use sha2::{Digest, Sha256};

/// Options every compile gets. `--fmad=false` keeps a * b + c as two roundings, as the CPU
/// backend computes it, so both backends agree as closely as the summation order allows.
const OPTIONS: &[&str] = &["--fmad=false"];

/// The architectures Joule's CUDA backend supports (Pascal to Hopper), for compile checks.
pub const ARCHS: &[&str] = &[
    "sm_60", "sm_61", "sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90",
];

/// Whether libnvrtc can be loaded (it is not part of the driver; it comes with the CUDA
/// toolkit or the `nvidia-cuda-nvrtc-cu12` wheel).
pub fn available() -> bool {
    // SAFETY: only dlopen()s libnvrtc under cudarc's candidate names.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, e.g. (12, 9).
pub fn version() -> Result<(i32, i32), String> {
    if !available() {
        return Err(missing());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("{e:?}"))?;
    Ok((major, minor))
}

fn missing() -> String {
    "libnvrtc.so.12 could not be loaded: install the CUDA toolkit's NVRTC or the \
     nvidia-cuda-nvrtc-cu12 wheel (deploy/fetch-nvrtc.sh) and put its lib directory on \
     LD_LIBRARY_PATH"
        .into()
}

/// Compiles `src` to a CUBIN for `arch` ("sm_61"); the error carries NVRTC's log.
pub fn compile(src: &str, arch: &str) -> Result<Vec<u8>, String> {
    if !available() {
        return Err(missing());
    }
    let src_c = CString::new(src).map_err(|_| "kernel source contains a NUL byte".to_string())?;
    let name = CString::new("joule.cu").expect("no NUL");
    let prog =
        result::create_program(&src_c, Some(name.as_c_str())).map_err(|e| format!("{e:?}"))?;
    let mut opts: Vec<String> = vec![format!("--gpu-architecture={arch}")];
    opts.extend(OPTIONS.iter().map(|s| s.to_string()));
    // SAFETY: `prog` is a live program until destroyed below; buffers are sized by NVRTC.
    let out = unsafe {
        (|| {
            if let Err(e) = result::compile_program(prog, &opts) {
                let log = result::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(format!(
                    "NVRTC could not compile the kernels for {arch} ({e:?}):\n{log}"
                ));
            }
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| format!("{e:?}"))?;
            if size == 0 {
                return Err(format!(
                    "NVRTC made no CUBIN for {arch:?} (a real sm_XX is needed)"
                ));
            }
            let mut buf = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| format!("{e:?}"))?;
            Ok(buf)
        })()
    };
    // SAFETY: destroys the program created above, once.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// The cache file for `src` on `arch` with this NVRTC.
fn cache_path(dir: &Path, src: &str, arch: &str, nvrtc: (i32, i32)) -> PathBuf {
    let hash = Sha256::digest(src.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(
        "kernels-{hex}-{arch}-nvrtc{}.{}.cubin",
        nvrtc.0, nvrtc.1
    ))
}

/// The CUBIN for `src` on `arch`, from `cache_dir` when compiled before, else compiled and
/// stored there (atomically: a half-written file is never read). Returns it and whether it came
/// from the cache. A cache that cannot be written is not an error.
pub fn cached(src: &str, arch: &str, cache_dir: &Path) -> Result<(Vec<u8>, bool), String> {
    let path = cache_path(cache_dir, src, arch, version()?);
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.starts_with(b"\x7fELF")
    {
        return Ok((bytes, true));
    }
    let started = std::time::Instant::now();
    let bytes = compile(src, arch)?;
    tracing::info!(arch, ms = started.elapsed().as_millis() as u64, path = %path.display(), "compiled the CUDA kernels");
    let tmp = path.with_extension("tmp");
    let stored = std::fs::create_dir_all(cache_dir)
        .and_then(|_| std::fs::write(&tmp, &bytes))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = stored {
        tracing::warn!(error = %e, dir = %cache_dir.display(), "cannot cache the compiled kernels");
    }
    Ok((bytes, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles for every supported architecture. Needs libnvrtc, not a GPU; CI
    /// runs it with the NVRTC wheel (`deploy/fetch-nvrtc.sh`).
    #[test]
    #[ignore = "needs libnvrtc (deploy/fetch-nvrtc.sh); CI runs it"]
    fn nvrtc_compiles_every_kernel_for_every_architecture() {
        assert!(available(), "{}", missing());
        for arch in ARCHS {
            let cubin = compile(crate::cuda::KERNEL_SOURCE, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(cubin.starts_with(b"\x7fELF"), "{arch}: not an ELF CUBIN");
            // Every kernel the runtime loads by name is a symbol of the module.
            for name in crate::cuda::runtime::KERNELS {
                let sym = format!("\0{name}\0");
                assert!(
                    cubin.windows(sym.len()).any(|w| w == sym.as_bytes()),
                    "{arch}: the CUBIN exports no kernel {name}"
                );
            }
        }
    }

    #[test]
    #[ignore = "needs libnvrtc (deploy/fetch-nvrtc.sh); CI runs it"]
    fn nvrtc_reports_a_kernel_that_does_not_compile_and_caches_one_that_does() {
        let e = compile(
            "extern \"C\" __global__ void k() { undefined_thing(); }",
            "sm_80",
        )
        .unwrap_err();
        assert!(
            e.contains("undefined_thing"),
            "the log names the problem: {e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let src = "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }";
        let (a, hit) = cached(src, "sm_75", dir.path()).unwrap();
        assert!(!hit);
        let (b, hit) = cached(src, "sm_75", dir.path()).unwrap();
        assert!(hit && a == b);
        let (_, hit) = cached(src, "sm_86", dir.path()).unwrap();
        assert!(!hit, "another architecture is another entry");
    }
}
