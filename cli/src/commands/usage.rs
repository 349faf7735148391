//! `get usage [--tenant T] [--from DATE] [--to DATE] [-o csv]`: the usage records per tenant,
//! UTC day and model, and [`fetch`], which `bill` shares.

use joule_client::calendar;
use joule_proto::v1;

use crate::connect::Cluster;
use crate::render::{self, Format};
use crate::views::usage::{self, Usage};

/// The days `--from` and `--to` name (inclusive): by default the month of `--to`, and `--to`
/// is today by default.
pub fn range(from: Option<&str>, to: Option<&str>, today: u32) -> anyhow::Result<(u32, u32)> {
    let to = match to {
        Some(s) => calendar::parse_date(s).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        None => today,
    };
    let from = match from {
        Some(s) => calendar::parse_date(s).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
        None => calendar::month_of(to).0,
    };
    if from > to {
        anyhow::bail!(
            "--from {} is after --to {}",
            calendar::format_day(from),
            calendar::format_day(to)
        );
    }
    Ok((from, to))
}

/// The usage rows of `tenant` (empty: everyone's) from `from` to `to`, inclusive, sorted by
/// tenant, day and model.
pub async fn fetch(
    c: &Cluster,
    tenant: &str,
    (from, to): (u32, u32),
) -> anyhow::Result<Vec<v1::UsageRow>> {
    let req = v1::GetUsageRequest {
        tenant: tenant.to_string(),
        from_day: from,
        to_day: to,
    };
    let mut rows = c
        .call(|mut a| {
            let req = req.clone();
            async move { a.get_usage(req).await }
        })
        .await?
        .rows;
    rows.sort_by(|a, b| (&a.tenant, a.day, &a.model).cmp(&(&b.tenant, b.day, &b.model)));
    Ok(rows)
}

pub async fn get(
    c: &Cluster,
    tenant: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    f: Format,
) -> anyhow::Result<()> {
    let days = range(from, to, calendar::today())?;
    let rows: Vec<Usage> = fetch(c, tenant.unwrap_or_default(), days)
        .await?
        .into_iter()
        .map(Usage::from)
        .collect();
    if f == Format::Csv {
        print!("{}", usage::csv(&rows));
        Ok(())
    } else {
        render::list(&rows, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_defaults_to_this_month_and_names_bad_flags() {
        let today = 20_800; // 2026-12-13
        assert_eq!(range(None, None, today).unwrap(), (20_788, 20_800));
        assert_eq!(
            range(Some("2026-11-30"), None, today).unwrap(),
            (20_787, 20_800)
        );
        assert_eq!(
            range(None, Some("2026-11-15"), today).unwrap(),
            (20_758, 20_772)
        );
        let e = range(Some("2026-12-32"), None, today)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--from: ") && e.contains("YYYY-MM-DD"), "{e}");
        let e = range(None, Some("12/01/2026"), today)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--to: ") && e.contains("YYYY-MM-DD"), "{e}");
        let e = range(Some("2026-12-10"), Some("2026-12-01"), today)
            .unwrap_err()
            .to_string();
        assert!(e.contains("after"), "{e}");
    }
}
