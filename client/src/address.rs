//! Address rules: every Joule flag that names an endpoint takes `HOST:PORT` or a URL
//! (`http://HOST:PORT`, `https://...`), and a list of them is comma-separated. One place decides
//! what is accepted, so a worker, a scheduler and `joulectl` refuse the same typos the same way.

/// An address that is not `HOST:PORT` or an http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{addr:?} is not an address: {reason} (expected HOST:PORT or http://HOST:PORT)")]
pub struct AddressError {
    pub addr: String,
    pub reason: String,
}

impl AddressError {
    pub fn new(addr: &str, reason: impl Into<String>) -> Self {
        Self {
            addr: addr.to_string(),
            reason: reason.into(),
        }
    }
}

/// `HOST:PORT` → `http://HOST:PORT`; an http(s) URL is kept as it is. The port must be 1-65535.
pub fn normalize(addr: &str) -> Result<String, AddressError> {
    let a = addr.trim();
    let (scheme, rest) = match a.split_once("://") {
        Some((s, r)) if s == "http" || s == "https" => (s, r),
        Some((s, _)) => {
            return Err(AddressError::new(
                addr,
                format!("scheme {s:?} is not http or https"),
            ));
        }
        None => ("http", a),
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(AddressError::new(addr, "a path is not allowed"));
    }
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(AddressError::new(addr, "no port"));
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(AddressError::new(addr, "no host"));
    }
    // A bare IPv6 address before the port (`fd00::7:7000`, as `$(POD_IP):7000` gives on an
    // IPv6 cluster): the port is required, so the last field is it; the URL brackets the host.
    let hostport = if host.contains(':') && !host.starts_with('[') {
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(AddressError::new(
                addr,
                format!("host {host:?} is neither a name nor an IPv6 address"),
            ));
        }
        format!("[{host}]:{port}")
    } else {
        hostport.to_string()
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(format!("{scheme}://{hostport}")),
        _ => Err(AddressError::new(
            addr,
            format!("port {port:?} is not 1-65535"),
        )),
    }
}

/// A comma-separated list of addresses, each normalised; empty items are skipped.
pub fn parse_list(list: &str) -> Result<Vec<String>, AddressError> {
    let v: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(normalize)
        .collect::<Result<_, _>>()?;
    if v.is_empty() {
        return Err(AddressError::new(list, "the list is empty"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_urls_normalise_and_typos_are_refused_with_the_reason() {
        assert_eq!(
            normalize("127.0.0.1:7001").unwrap(),
            "http://127.0.0.1:7001"
        );
        assert_eq!(normalize(" http://a:1/ ").unwrap(), "http://a:1");
        assert_eq!(normalize("https://[::1]:443").unwrap(), "https://[::1]:443");
        assert_eq!(
            normalize("fd00:10:244::7:7000").unwrap(),
            "http://[fd00:10:244::7]:7000"
        );
        assert_eq!(normalize("::1:7000").unwrap(), "http://[::1]:7000");
        for (bad, why) in [
            ("localhost", "no port"),
            (":7001", "no host"),
            ("a:0", "port"),
            ("a:99999", "port"),
            ("ftp://a:1", "scheme"),
            ("http://a:1/x", "path"),
            ("a:b:7001", "IPv6"),
        ] {
            let e = normalize(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert_eq!(parse_list("a:1, b:2,,").unwrap().len(), 2);
        assert!(parse_list(" , ").is_err());
        assert!(parse_list("a:1,b").is_err());
    }
}
