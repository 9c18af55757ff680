//! `bootlace fleet --html FILE`: the fleet on one self-contained page. No external
//! asset, font or script: the charts are SVG drawn here, the instance table is plain
//! HTML, and a few lines of plain JavaScript sort and filter it. Every text that came
//! from a report is escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Fleet, Group, Marks, age};
use crate::report::Status;

/// Colours for tags, in the order tags are first met in a role.
const TAG_COLOURS: [&str; 8] = [
    "#3b6fd4", "#1f9e89", "#c2661c", "#7b5bd6", "#c43d7c", "#5d8a2f", "#8a6d3b", "#4a5568",
];
const BAR_WIDTH: f64 = 560.0;

/// The whole page.
pub fn render(fleet: &Fleet) -> String {
    let mut page = String::with_capacity(16 << 10);
    page.push_str(HEAD);
    header(&mut page, fleet);
    let mut environments: BTreeMap<&str, Vec<&Group>> = BTreeMap::new();
    for group in &fleet.groups {
        environments.entry(&group.environment).or_default().push(group);
    }
    if environments.is_empty() {
        page.push_str("<p class=\"empty\">No instance has reported yet.</p>\n");
    }
    for (environment, groups) in &environments {
        environment_section(&mut page, fleet, environment, groups);
    }
    instance_table(&mut page, fleet);
    unreadable(&mut page, fleet);
    page.push_str(SCRIPT);
    page.push_str("</body>\n</html>\n");
    page
}

fn header(page: &mut String, fleet: &Fleet) {
    let total = fleet.total();
    let _ = write!(
        page,
        "<header><h1>Fleet</h1><p class=\"meta\">{} &middot; generated {} &middot; stale after {}</p></header>\n\
         <section class=\"cards\">",
        esc(&fleet.store),
        esc(&fleet.generated_at),
        age(fleet.stale_after_s)
    );
    let cards = [
        ("instances", fleet.instance_count(), ""),
        ("ok", total.ok, "ok"),
        ("failed", total.failed, "failed"),
        ("degraded", total.degraded, "degraded"),
        ("rolled back", total.rolled_back, "rolled_back"),
        ("stale", fleet.stale_count(), "stale"),
        ("unreadable", fleet.unreadable_count, "unreadable"),
    ];
    for (label, count, class) in cards {
        let dim = if count == 0 && !class.is_empty() {
            " zero"
        } else {
            ""
        };
        let _ = write!(
            page,
            "<div class=\"card {class}{dim}\"><b>{count}</b><span>{label}</span></div>"
        );
    }
    page.push_str("</section>\n");
}

fn environment_section(page: &mut String, fleet: &Fleet, environment: &str, groups: &[&Group]) {
    let instances: u64 = groups.iter().map(|g| g.instances).sum();
    let _ = writeln!(
        page,
        "<section class=\"env\"><h2>{} <small>{instances} instance{}</small></h2>",
        esc(environment),
        plural(instances)
    );
    let mut roles: BTreeMap<&str, Vec<&Group>> = BTreeMap::new();
    for group in groups {
        roles.entry(&group.role).or_default().push(group);
    }
    for (role, groups) in roles {
        let marks = groups[0]
            .pointer
            .as_ref()
            .and_then(|name| fleet.pointers.get(name));
        role_row(page, role, &groups, marks);
    }
    page.push_str("</section>\n");
}

/// A role: its pointer, a bar of its tags and a bar of its statuses.
fn role_row(page: &mut String, role: &str, groups: &[&Group], marks: Option<&Marks>) {
    let instances: u64 = groups.iter().map(|g| g.instances).sum();
    let stale: u64 = groups.iter().map(|g| g.stale).sum();
    let _ = write!(
        page,
        "<div class=\"role\"><div class=\"role-head\"><h3>{}</h3><span>{instances} instance{}</span>",
        esc(role),
        plural(instances)
    );
    if stale > 0 {
        let _ = write!(page, "<span class=\"badge stale\">{stale} stale</span>");
    }
    match marks {
        Some(m) => {
            let _ = write!(
                page,
                "<span class=\"pointer\">pointer {} &rarr; <b>{}</b> (serial {})</span>",
                esc(&m.pointer),
                esc(&m.stable),
                m.serial
            );
        }
        None => page.push_str("<span class=\"pointer\">no pointer read</span>"),
    }
    page.push_str("</div>\n");
    let tags: Vec<Segment> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let tag = g.tag.as_deref().unwrap_or("no release");
            let mark = if g.stable {
                " \u{2605}"
            } else if g.target {
                " \u{2192}"
            } else {
                ""
            };
            Segment {
                label: format!("{tag}{mark}"),
                title: format!(
                    "{tag}: {} instance{}{}",
                    g.instances,
                    plural(g.instances),
                    if g.stable {
                        " (stable)"
                    } else if g.target {
                        " (rollout target)"
                    } else {
                        ""
                    }
                ),
                count: g.instances,
                colour: TAG_COLOURS[i % TAG_COLOURS.len()],
            }
        })
        .collect();
    let statuses = super::ByStatus::sum(groups.iter().copied());
    let statuses: Vec<Segment> = [
        ("ok", statuses.ok, "#2e9d5b"),
        ("degraded", statuses.degraded, "#d99a00"),
        ("rolled back", statuses.rolled_back, "#8e5bd6"),
        ("failed", statuses.failed, "#d64545"),
    ]
    .into_iter()
    .filter(|(_, count, _)| *count > 0)
    .map(|(label, count, colour)| Segment {
        label: label.into(),
        title: format!("{label}: {count}"),
        count,
        colour,
    })
    .collect();
    page.push_str("<div class=\"bars\">");
    if let Some(m) = marks {
        rollout(page, groups, m);
    }
    page.push_str("<span class=\"axis\">tags</span>");
    bar(page, &tags, instances);
    page.push_str("<span class=\"axis\">status</span>");
    bar(page, &statuses, instances);
    page.push_str("</div></div>\n");
}

/// A rollout's progress, when the pointer carries one.
fn rollout(page: &mut String, groups: &[&Group], marks: &Marks) {
    let (Some(target), Some(percent)) = (&marks.target, marks.percent) else {
        return;
    };
    let on_target: u64 = groups.iter().filter(|g| g.target).map(|g| g.instances).sum();
    let instances: u64 = groups.iter().map(|g| g.instances).sum();
    let width = BAR_WIDTH * percent.clamp(0.0, 100.0) / 100.0;
    let reached = if instances == 0 {
        0.0
    } else {
        BAR_WIDTH * on_target as f64 / instances as f64
    };
    let _ = writeln!(
        page,
        "<span class=\"axis\">rollout</span>\
         <svg class=\"rollout\" viewBox=\"0 0 {BAR_WIDTH} 10\" width=\"{BAR_WIDTH}\" height=\"10\" role=\"img\">\
         <title>asked {percent}%, on the target {on_target} of {instances}</title>\
         <rect width=\"{BAR_WIDTH}\" height=\"10\" rx=\"3\" fill=\"#e4e7ec\"/>\
         <rect width=\"{width:.1}\" height=\"10\" rx=\"3\" fill=\"#b9c8ea\"/>\
         <rect width=\"{reached:.1}\" height=\"10\" rx=\"3\" fill=\"#3b6fd4\"/></svg>\
         <span class=\"legend\">rollout of <b>{}</b>: {percent}% asked, {on_target} of {instances} on it</span>",
        esc(target)
    );
}

struct Segment {
    label: String,
    title: String,
    count: u64,
    colour: &'static str,
}

/// One horizontal stacked bar, each segment as wide as its share, labelled where the
/// label fits.
fn bar(page: &mut String, segments: &[Segment], total: u64) {
    let _ = write!(
        page,
        "<svg class=\"bar\" viewBox=\"0 0 {BAR_WIDTH} 26\" width=\"{BAR_WIDTH}\" height=\"26\" role=\"img\">"
    );
    let mut x = 0.0;
    for segment in segments {
        let width = if total == 0 {
            0.0
        } else {
            BAR_WIDTH * segment.count as f64 / total as f64
        };
        let _ = write!(
            page,
            "<g><title>{}</title><rect x=\"{x:.1}\" width=\"{width:.1}\" height=\"26\" fill=\"{}\"/>",
            esc(&segment.title),
            segment.colour
        );
        let label = format!("{} \u{b7} {}", segment.label, segment.count);
        if width >= 7.0 * label.chars().count() as f64 + 10.0 {
            let _ = write!(
                page,
                "<text x=\"{:.1}\" y=\"17.5\">{}</text>",
                x + 6.0,
                esc(&label)
            );
        }
        page.push_str("</g>");
        x += width;
    }
    page.push_str("</svg>");
    page.push_str("<span class=\"legend\">");
    for segment in segments {
        let _ = write!(
            page,
            "<i style=\"background:{}\"></i>{} {} ",
            segment.colour,
            esc(&segment.label),
            segment.count
        );
    }
    page.push_str("</span>");
}

fn instance_table(page: &mut String, fleet: &Fleet) {
    if fleet.instances.is_empty() {
        return;
    }
    let _ = write!(
        page,
        "<section class=\"instances\"><h2>Instances <small id=\"shown\">{0} of {0}</small></h2>\n\
         <div class=\"filters\"><input id=\"filter\" type=\"search\" placeholder=\"filter: machine id, tag, role, anything\" autocomplete=\"off\">\
         <select id=\"status\"><option value=\"\">every status</option><option>ok</option><option>failed</option>\
         <option>degraded</option><option value=\"rolled_back\">rolled back</option><option value=\"stale\">stale</option></select></div>\n\
         <table id=\"fleet\"><thead><tr>",
        fleet.instances.len()
    );
    for (i, name) in [
        "machine id",
        "environment",
        "role",
        "context",
        "tag",
        "status",
        "age",
        "init script",
        "version",
    ]
    .iter()
    .enumerate()
    {
        let _ = write!(page, "<th data-col=\"{i}\">{name}</th>");
    }
    page.push_str("</tr></thead><tbody>\n");
    for i in &fleet.instances {
        let status = status_name(i.status);
        let stale = if i.stale { " stale" } else { "" };
        let _ = writeln!(
            page,
            "<tr data-status=\"{status}{stale}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"pill {status}\">{}</span>{}</td><td data-sort=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.machine_id),
            esc(&i.environment),
            esc(&i.role),
            esc(i.context.as_deref().unwrap_or("-")),
            esc(i.tag.as_deref().unwrap_or("-")),
            status.replace('_', " "),
            if i.stale {
                " <span class=\"pill stale\">stale</span>"
            } else {
                ""
            },
            i.age_s,
            age(i.age_s),
            esc(i.init_script.as_deref().unwrap_or("-")),
            esc(i.bootlace_version.as_deref().unwrap_or("-")),
        );
    }
    page.push_str("</tbody></table></section>\n");
}

fn unreadable(page: &mut String, fleet: &Fleet) {
    if fleet.unreadable.is_empty() {
        return;
    }
    let _ = write!(
        page,
        "<section class=\"unreadable\"><h2>Unreadable reports <small>{}</small></h2><ul>",
        fleet.unreadable_count
    );
    for u in &fleet.unreadable {
        let _ = write!(page, "<li><code>{}</code> {}</li>", esc(&u.key), esc(&u.reason));
    }
    page.push_str("</ul></section>\n");
}

pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::Degraded => "degraded",
        Status::RolledBack => "rolled_back",
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Text made safe for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bootlace fleet</title>
<style>
:root { --ink:#1c2430; --muted:#677489; --line:#e4e7ec; --bg:#f6f7f9; }
* { box-sizing:border-box; }
body { margin:0; padding:24px 32px 48px; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
header h1 { margin:0; font-size:22px; }
.meta { margin:4px 0 18px; color:var(--muted); }
h2 { font-size:17px; margin:0 0 12px; }
h2 small, .role-head span { color:var(--muted); font-weight:400; font-size:13px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin-bottom:22px; }
.card { background:#fff; border:1px solid var(--line); border-left:4px solid #3b6fd4; border-radius:6px; padding:8px 16px; min-width:104px; }
.card b { display:block; font-size:22px; }
.card span { color:var(--muted); }
.card.ok { border-left-color:#2e9d5b; } .card.failed { border-left-color:#d64545; }
.card.degraded { border-left-color:#d99a00; } .card.rolled_back { border-left-color:#8e5bd6; }
.card.stale { border-left-color:#8a94a6; } .card.unreadable { border-left-color:#c2661c; }
.card.zero { opacity:.55; }
section.env, section.instances, section.unreadable { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin-bottom:18px; }
.role { padding:10px 0; border-top:1px solid var(--line); }
.role:first-of-type { border-top:none; }
.role-head { display:flex; align-items:baseline; gap:12px; flex-wrap:wrap; margin-bottom:6px; }
.role-head h3 { margin:0; font-size:15px; }
.role-head .pointer { margin-left:auto; }
.bars { display:grid; grid-template-columns:56px auto; row-gap:4px; column-gap:10px; align-items:center; }
.bars .axis { color:var(--muted); font-size:12px; grid-column:1; }
.bars svg, .bars .legend { grid-column:2; }
.bar { max-width:100%; height:auto; border-radius:4px; background:#eef0f3; }
.bar text { fill:#fff; font-size:12px; font-weight:600; }
.legend { color:var(--muted); font-size:12px; margin-bottom:4px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin:0 4px 0 8px; vertical-align:-1px; }
.legend i:first-child { margin-left:0; }
svg.rollout { max-width:100%; height:auto; }
.badge, .pill { display:inline-block; padding:0 8px; border-radius:10px; font-size:12px; line-height:18px; background:#eef0f3; color:var(--ink); }
.badge.stale, .pill.stale { background:#e2e5ea; color:#4a5568; }
.pill.ok { background:#dcf2e4; color:#1d6b3d; } .pill.failed { background:#fbe1e1; color:#a12b2b; }
.pill.degraded { background:#fbefc9; color:#7a5800; } .pill.rolled_back { background:#ece3fa; color:#5b3a9a; }
.filters { display:flex; gap:10px; margin-bottom:10px; }
.filters input { flex:1; max-width:420px; padding:6px 10px; border:1px solid #cfd5de; border-radius:6px; font:inherit; }
.filters select { padding:6px; border:1px solid #cfd5de; border-radius:6px; font:inherit; background:#fff; }
table { width:100%; border-collapse:collapse; font-size:13px; }
th { text-align:left; color:var(--muted); font-weight:600; border-bottom:2px solid var(--line); padding:6px 8px; cursor:pointer; user-select:none; white-space:nowrap; }
th.asc::after { content:" \25B2"; font-size:10px; } th.desc::after { content:" \25BC"; font-size:10px; }
td { padding:5px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
tbody tr:hover { background:#f3f6fb; }
.unreadable li { margin:2px 0; } .unreadable code { color:#a12b2b; }
.empty { color:var(--muted); }
</style>
</head>
<body>
"#;

const SCRIPT: &str = r##"<script>
// Sorting and filtering; the state lives in the address's #fragment
// (#q=TEXT&status=STATUS&sort=COLUMN&desc), so a view can be linked to.
(function () {
  var table = document.getElementById("fleet");
  if (!table) return;
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("filter"), status = document.getElementById("status");
  var shown = document.getElementById("shown"), heads = table.tHead.rows[0].cells;
  var column = -1, ascending = true;
  rows.forEach(function (row) {
    row.text = Array.prototype.map.call(row.cells, function (c) { return c.textContent; })
      .join("\t").toLowerCase();
  });
  function remember() {
    var p = new URLSearchParams();
    if (filter.value) p.set("q", filter.value);
    if (status.value) p.set("status", status.value);
    if (column >= 0) p.set("sort", column);
    if (column >= 0 && !ascending) p.set("desc", "");
    history.replaceState(null, "", "#" + p.toString());
  }
  function apply() {
    var text = filter.value.trim().toLowerCase(), want = status.value, n = 0;
    rows.forEach(function (row) {
      var ok = (!text || row.text.indexOf(text) >= 0) &&
               (!want || row.getAttribute("data-status").split(" ").indexOf(want) >= 0);
      row.style.display = ok ? "" : "none";
      if (ok) n++;
    });
    shown.textContent = n + " of " + rows.length;
  }
  function sortBy(col, up) {
    column = col; ascending = up;
    Array.prototype.forEach.call(heads, function (h) { h.className = ""; });
    heads[col].className = up ? "asc" : "desc";
    function key(row) {
      var cell = row.cells[col], sort = cell.getAttribute("data-sort");
      return sort === null ? cell.textContent : Number(sort);
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      var c = typeof x === "number" ? x - y : x.localeCompare(y, undefined, {numeric: true});
      return up ? c : -c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  filter.addEventListener("input", function () { apply(); remember(); });
  status.addEventListener("change", function () { apply(); remember(); });
  Array.prototype.forEach.call(heads, function (th) {
    th.addEventListener("click", function () {
      var col = Number(th.getAttribute("data-col"));
      sortBy(col, col === column ? !ascending : true);
      remember();
    });
  });
  var start = new URLSearchParams(location.hash.slice(1));
  filter.value = start.get("q") || "";
  status.value = start.get("status") || "";
  var col = Number(start.get("sort"));
  // Any address can be typed or linked: a column that is not one is ignored.
  if (start.has("sort") && Number.isInteger(col) && col >= 0 && col < heads.length) {
    sortBy(col, !start.has("desc"));
  }
  apply();
})();
</script>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_text_is_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;"
        );
    }
}
