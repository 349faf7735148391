//! `bill --tenant T --month YYYY-MM --price-per-mtok X --price-per-kwh Y [--currency C]`: the
//! month's usage (through [`super::usage::fetch`]) priced by [`crate::views::bill`].

use joule_client::calendar;

use crate::connect::Cluster;
use crate::render::{self, Format};
use crate::views::bill::{self, Prices};

/// A price from a flag: finite and not negative.
fn price(flag: &str, v: f64) -> anyhow::Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        anyhow::bail!("{flag} {v}: a price is a finite number >= 0")
    }
}

/// The days of `--month` to bill: all of it, up to today for the current month.
fn days(month: &str, today: u32) -> anyhow::Result<(u32, u32)> {
    let (first, last) =
        calendar::parse_month(month).map_err(|e| anyhow::anyhow!("--month: {e}"))?;
    if first > today {
        anyhow::bail!("--month {month} has not started yet");
    }
    Ok((first, last.min(today)))
}

pub async fn bill(
    c: &Cluster,
    tenant: &str,
    month: &str,
    per_mtok: f64,
    per_kwh: f64,
    currency: &str,
    f: Format,
) -> anyhow::Result<()> {
    let prices = Prices {
        per_mtok: price("--price-per-mtok", per_mtok)?,
        per_kwh: price("--price-per-kwh", per_kwh)?,
        currency: currency.to_string(),
    };
    let range = days(month, calendar::today())?;
    let rows = super::usage::fetch(c, tenant, range).await?;
    let b = bill::compute(tenant, month, range, &rows, &prices);
    if f.is_table() {
        print!("{}", bill::text(&b));
        Ok(())
    } else {
        render::emit(&b, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_and_named() {
        assert_eq!(price("--price-per-kwh", 0.25).unwrap(), 0.25);
        for v in [-1.0, f64::NAN, f64::INFINITY] {
            let e = price("--price-per-kwh", v).unwrap_err().to_string();
            assert!(e.starts_with("--price-per-kwh "), "{e}");
        }
        let today = 20_800; // 2026-12-13
        assert_eq!(days("2026-12", today).unwrap(), (20_788, 20_800));
        assert_eq!(days("2026-11", today).unwrap(), (20_758, 20_787));
        let e = days("2026-13", today).unwrap_err().to_string();
        assert!(e.starts_with("--month: ") && e.contains("YYYY-MM"), "{e}");
        assert!(days("2027-01", today).is_err());
    }
}
