//! The Grafana dashboard (`deploy/grafana/`): what an import needs, its PromQL under
//! `promtool`, its metric names against the operator's own registry, and the chart's
//! ConfigMap for Grafana's dashboard sidecar. No Grafana runs here: these prove the
//! JSON's shape and its queries, not how Grafana draws them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vultr_iam_operator::crd::{FINALIZER, PAUSED_ANNOTATION};
use vultr_iam_operator::metrics::Metrics;
use vultr_iam_operator::vultr::{RequestObserver, RequestRecord, routes};

use super::*;

const DASHBOARD_DIR: &str = "deploy/grafana";
const DASHBOARD: &str = "deploy/grafana/vultr-iam-operator.json";
const DATASOURCE_VAR: &str = "datasource";
const GRID_COLUMNS: i64 = 24;
/// Grafana's own variables the queries may use, and what the tests put in their place.
const BUILTINS: [(&str, &str); 3] = [
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
];
/// The template variables' values in the tests (the chart's default job).
const VARIABLES: [(&str, &str); 2] = [
    ("$namespace", NAMESPACE),
    ("$job", "vultr-iam-operator-metrics"),
];
/// Series Prometheus itself adds to every scrape target.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];
const POD: &str = "vultr-iam-operator-0";

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// One PromQL expression of the dashboard, with where it comes from.
struct Query {
    at: String,
    expr: String,
}

impl Query {
    fn new(at: &str, expr: &str) -> Query {
        Query {
            at: at.to_owned(),
            expr: expr.to_owned(),
        }
    }
}

/// The panels' target expressions and the query variables' `label_values(...)` queries.
fn queries(dash: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                at: format!(
                    "panel {} {:?} {}",
                    panel["id"], panel["title"], target["refId"]
                ),
                expr: target["expr"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    for var in variables(dash) {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().or(var["query"].as_str());
            out.push(Query {
                at: format!("variable {}", var["name"]),
                expr: query.unwrap_or_default().to_owned(),
            });
        }
    }
    out
}

fn variables(dash: &Value) -> Vec<&Value> {
    dash["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// What Grafana needs to import the dashboard and draw every panel from the
/// `datasource` variable; one message per problem.
fn import_problems(dash: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(p);
    if dash["title"].as_str().is_none_or(str::is_empty) {
        problem("no title".into());
    }
    let uid_ok = dash["uid"].as_str().is_some_and(|u| {
        !u.is_empty()
            && u.len() <= 40
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if !uid_ok {
        problem(format!("uid {} is not 1-40 of [A-Za-z0-9-_]", dash["uid"]));
    }
    // 39: Grafana 11; an older dashboard is migrated on load, a newer one refused.
    if dash["schemaVersion"].as_i64().is_none_or(|v| v < 39) {
        problem(format!(
            "schemaVersion {} is not current",
            dash["schemaVersion"]
        ));
    }
    let vars = variables(dash);
    let var_names: HashSet<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    if !vars.iter().any(|v| {
        v["name"] == DATASOURCE_VAR && v["type"] == "datasource" && v["query"] == "prometheus"
    }) {
        problem("no datasource variable of type prometheus".into());
    }
    let datasource = json!({"type": "prometheus", "uid": format!("${{{DATASOURCE_VAR}}}")});
    for var in &vars {
        if var["type"] == "query" && var["datasource"] != datasource {
            problem(format!(
                "variable {} is not on ${DATASOURCE_VAR}",
                var["name"]
            ));
        }
    }

    let Some(panels) = dash["panels"].as_array().filter(|p| !p.is_empty()) else {
        problem("no panels".into());
        return problems;
    };
    let mut ids = HashSet::new();
    let mut rects: Vec<(String, (i64, i64, i64, i64))> = Vec::new();
    for panel in panels {
        let at = format!("panel {} {:?}", panel["id"], panel["title"]);
        match panel["id"].as_i64() {
            Some(id) if ids.insert(id) => {}
            _ => problem(format!("{at}: id missing or not unique")),
        }
        if panel["title"].as_str().is_none_or(str::is_empty) {
            problem(format!("{at}: no title"));
        }
        let kind = panel["type"].as_str().unwrap_or_default();
        if !["row", "stat", "timeseries"].contains(&kind) {
            problem(format!("{at}: unexpected panel type {kind:?}"));
        }
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_i64());
        match (x, y, w, h) {
            (Some(x), Some(y), Some(w), Some(h))
                if x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= GRID_COLUMNS =>
            {
                for (other, (ox, oy, ow, oh)) in &rects {
                    let (ox, oy, ow, oh): (i64, i64, i64, i64) = (*ox, *oy, *ow, *oh);
                    if x < ox + ow && ox < x + w && y < oy + oh && oy < y + h {
                        problem(format!("{at}: gridPos overlaps {other}"));
                    }
                }
                rects.push((at.clone(), (x, y, w, h)));
            }
            _ => problem(format!("{at}: bad gridPos {g}")),
        }
        if kind == "row" {
            if panel["collapsed"] != true && panel["panels"] != json!([]) {
                problem(format!("{at}: an open row holds panels"));
            }
            continue;
        }
        if panel["datasource"] != datasource {
            problem(format!("{at}: datasource is not ${DATASOURCE_VAR}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problem(format!("{at}: no targets"));
        }
        let mut refs = HashSet::new();
        for t in &targets {
            if !t["refId"]
                .as_str()
                .is_some_and(|r| refs.insert(r.to_owned()))
            {
                problem(format!("{at}: refId {} missing or repeated", t["refId"]));
            }
            if t["datasource"] != datasource {
                problem(format!(
                    "{at}: target {} not on ${DATASOURCE_VAR}",
                    t["refId"]
                ));
            }
            if t["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                problem(format!("{at}: target {} has no expr", t["refId"]));
            }
        }
    }
    for q in queries(dash) {
        for var in dollar_names(&q.expr) {
            let builtin = BUILTINS.iter().any(|(b, _)| b[1..] == *var);
            if !builtin && !var_names.contains(var.as_str()) {
                problem(format!("{}: ${var} is no variable", q.at));
            }
        }
    }
    problems
}

/// The `$name` / `${name}` references of a query.
fn dollar_names(expr: &str) -> Vec<String> {
    expr.split('$')
        .skip(1)
        .map(|rest| {
            rest.trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Plain PromQL for promtool: Grafana's variables replaced by test values, and
/// `label_values(selector, label)` (a variable query) by the selector with that label set.
fn promql(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (from, to) in BUILTINS.iter().chain(VARIABLES.iter()) {
        out = out.replace(from, to);
    }
    assert!(!out.contains('$'), "unreplaced variable in {out}");
    if let Some(args) = out
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let (selector, label) = args
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        let label = label.trim();
        let selector = match selector.split_once('{') {
            Some((name, rest)) => format!("{name}{{{label}!=\"\", {rest}"),
            None => format!("{selector}{{{label}!=\"\"}}"),
        };
        return format!("group by ({label}) ({selector})");
    }
    out
}

/// The metric names an expression selects: identifiers followed by `{`, and every
/// `vultr_iam_` identifier (string literals and numbers such as `5m` skipped).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' || c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:.".contains(chars[i]))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if !c.is_ascii_digit() && (next == Some(&'{') || word.starts_with("vultr_iam_")) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// One sample line of the exposition.
struct Sample {
    family: String,
    name: String,
    /// The label pairs as written, without braces (empty when none).
    labels: String,
    value: String,
}

/// `(family name, type)` and the samples of an OpenMetrics text. Label values may hold
/// braces (route templates such as `{policy_id}`): the label set ends at the first `}`
/// outside quotes.
fn parse_exposition(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut families = BTreeMap::new();
    let mut samples = Vec::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            family = name.to_owned();
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..];
            let (mut quoted, mut escaped, mut end) = (false, false, None);
            for (i, c) in body.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated labels: {line}"));
            (&body[..end], &body[end + 1..])
        } else {
            ("", &line[name_end..])
        };
        let value = rest.split_whitespace().next().expect("a sample value");
        samples.push(Sample {
            family: family.clone(),
            name: name.to_owned(),
            labels: labels.to_owned(),
            value: value.to_owned(),
        });
    }
    (families, samples)
}

fn attachment(value: Value) -> Arc<PolicyAttachment> {
    Arc::new(serde_json::from_value(value).expect("a PolicyAttachment"))
}

fn attachment_json(name: &str, ready: Option<&str>) -> Value {
    let mut obj = e2e::manifest(name, e2e::spec_names("user", "dns-admin", "a@example.com"));
    obj["metadata"]["namespace"] = json!("team-a");
    if let Some(status) = ready {
        obj["status"] = json!({"conditions": [{"type": "Ready", "status": status,
            "reason": if status == "True" { "Attached" } else { "PolicyNotFound" },
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    }
    obj
}

/// The operator's real `/metrics` text: its registry, fed one event of every kind that
/// creates a series (reconciles, Vultr requests with 200/429/503/no answer, a drift
/// repair, a batched verification, a verification, and objects in each state).
fn exposition() -> String {
    let metrics = Metrics::new();
    metrics.reconciled(Duration::from_millis(40), None);
    metrics.reconciled(Duration::from_millis(900), Some("ApiUnavailable"));
    for (route, status) in [
        (routes::LIST_POLICY_USERS, Some(200)),
        (routes::ATTACH_USER, Some(429)),
        (routes::DETACH_USER, Some(503)),
        (routes::LIST_POLICIES, None),
    ] {
        metrics.on_request(&RequestRecord {
            route,
            status,
            latency: Duration::from_millis(80),
            limiter_wait: Duration::from_millis(30),
            outcome: "ok",
        });
    }
    metrics.drift_repaired();
    metrics.verification_batched();
    let epoch = SystemTime::UNIX_EPOCH;
    metrics.verified(epoch + Duration::from_secs(60));
    let mut deleted = attachment_json("gone", Some("True"));
    deleted["metadata"]["deletionTimestamp"] = json!("1970-01-01T00:00:30Z");
    deleted["metadata"]["finalizers"] = json!([FINALIZER]);
    let mut paused = attachment_json("held", Some("True"));
    paused["metadata"]["annotations"] = json!({PAUSED_ANNOTATION: "true"});
    let objects = [
        attachment_json("ready", Some("True")),
        attachment_json("failing", Some("False")),
        attachment_json("new", None),
        deleted,
        paused,
    ]
    .map(attachment);
    metrics.observe_objects(&objects, epoch + Duration::from_secs(120));
    metrics.encode().expect("encode the registry")
}

fn promtool() -> String {
    let out = run_ok(Command::new(repo_path("deploy/image/tools.sh")).arg("promtool"));
    out.lines().last().expect("promtool path").trim().to_owned()
}

/// The queries as recording rules (JSON is YAML), for `promtool check rules`.
fn rules_file(queries: &[Query]) -> Value {
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"record": format!("grafana:query_{i}"), "expr": promql(&q.expr)}))
        .collect();
    json!({"groups": [{"name": "grafana-dashboard", "rules": rules}]})
}

/// `promtool test rules` input: every sample of the exposition as a series of the
/// default job (counters and histograms growing by their value each minute, gauges
/// flat), plus `up`; each query must return at least one sample at 30m.
fn promtool_test(queries: &[Query], exposition: &str) -> Value {
    let (families, samples) = parse_exposition(exposition);
    let scrape = format!(
        "namespace=\"{}\", job=\"{}\", pod=\"{POD}\"",
        VARIABLES[0].1, VARIABLES[1].1
    );
    let mut series: Vec<Value> = samples
        .iter()
        .map(|s| {
            let labels = if s.labels.is_empty() {
                scrape.clone()
            } else {
                format!("{}, {scrape}", s.labels)
            };
            let growing = matches!(families[&s.family].as_str(), "counter" | "histogram");
            let values = if growing {
                format!("0+{}x60", s.value)
            } else {
                format!("{}x60", s.value)
            };
            json!({"series": format!("{}{{{labels}}}", s.name), "values": values})
        })
        .collect();
    series.push(json!({"series": format!("up{{{scrape}}}"), "values": "1x60"}));
    let tests: Vec<Value> = queries
        .iter()
        .map(|q| {
            json!({"expr": format!("count({}) > bool 0", promql(&q.expr)), "eval_time": "30m",
                "exp_samples": [{"labels": "{}", "value": 1}]})
        })
        .collect();
    json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    })
}

/// The metric names the queries select that the exposition does not have, and the
/// exposed families no query shows.
fn unknown_and_unshown(queries: &[Query], exposition: &str) -> (Vec<String>, Vec<String>) {
    let (families, samples) = parse_exposition(exposition);
    let mut used_families = HashSet::new();
    let mut unknown = Vec::new();
    for q in queries {
        for name in metric_names(&q.expr) {
            match samples.iter().find(|s| s.name == name) {
                Some(s) => {
                    used_families.insert(s.family.clone());
                }
                None if PROMETHEUS_SERIES.contains(&name.as_str()) => {}
                None => unknown.push(format!("{}: {name}", q.at)),
            }
        }
    }
    let unshown = families
        .keys()
        .filter(|f| !used_families.contains(*f))
        .cloned()
        .collect();
    (unknown, unshown)
}

#[test]
fn grafana_dashboard_has_what_an_import_needs() {
    let dash = dashboard();
    let problems = import_problems(&dash);
    assert!(problems.is_empty(), "{DASHBOARD}: {problems:#?}");

    // The checker finds each kind of defect it looks for.
    let broken = |edit: &dyn Fn(&mut Value), expected: &str| {
        let mut d = dash.clone();
        edit(&mut d);
        let problems = import_problems(&d);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "expected {expected:?} in {problems:#?}"
        );
    };
    broken(&|d| d["uid"] = json!("a/b"), "uid");
    broken(&|d| d["schemaVersion"] = json!(16), "schemaVersion");
    broken(
        &|d| d["panels"][2]["id"] = d["panels"][1]["id"].clone(),
        "not unique",
    );
    broken(
        &|d| d["panels"][2]["gridPos"] = d["panels"][1]["gridPos"].clone(),
        "overlaps",
    );
    broken(
        &|d| d["panels"][1]["gridPos"]["x"] = json!(23),
        "bad gridPos",
    );
    broken(
        &|d| d["panels"][1]["targets"][0]["datasource"]["uid"] = json!("prom"),
        "not on",
    );
    broken(&|d| d["panels"][1]["targets"] = json!([]), "no targets");
    broken(
        &|d| d["panels"][1]["targets"][0]["expr"] = json!("up{namespace=\"$nmespace\"}"),
        "$nmespace is no variable",
    );
    broken(
        &|d| d["templating"]["list"][0]["type"] = json!("query"),
        "datasource variable",
    );
}

#[test]
fn grafana_queries_are_valid_promql() {
    let promtool = promtool();
    let dash = dashboard();
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |queries: &[Query]| {
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, rules_file(queries).to_string()).expect("write rules");
        output(Command::new(&promtool).args(["check", "rules"]).arg(&path))
    };
    let queries = queries(&dash);
    assert!(queries.len() > 20, "only {} queries", queries.len());
    let out = check(&queries);
    assert_success(&out, "promtool check rules");

    // promtool does reject a malformed query.
    let bad = [Query::new(
        "bad",
        "sum by (le (rate(vultr_iam_reconciles_total[$__rate_interval]))",
    )];
    assert!(
        !check(&bad).status.success(),
        "promtool accepted a bad query"
    );
}

#[test]
fn grafana_queries_select_exported_metrics_and_return_data() {
    let dash = dashboard();
    let queries = queries(&dash);
    let text = exposition();
    let (unknown, unshown) = unknown_and_unshown(&queries, &text);
    assert!(
        unknown.is_empty(),
        "metrics the operator does not export: {unknown:#?}\n{text}"
    );
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");

    let run = |queries: &[Query]| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("rules.yaml"),
            rules_file(queries).to_string(),
        )
        .expect("write rules");
        let test = promtool_test(queries, &text);
        std::fs::write(dir.path().join("test.yaml"), test.to_string()).expect("write test");
        output(
            Command::new(promtool())
                .args(["test", "rules", "test.yaml"])
                .current_dir(dir.path()),
        )
    };
    let out = run(&queries);
    assert_success(&out, "promtool test rules");

    // A misspelt metric or label value fails both checks.
    let typo = [Query::new(
        "typo",
        "sum(rate(vultr_iam_vultr_request_total{status=\"429\"}[$__rate_interval]))",
    )];
    assert_eq!(unknown_and_unshown(&typo, &text).0.len(), 1);
    let no_data = [Query::new(
        "label",
        "sum(rate(vultr_iam_vultr_requests_total{status=\"4029\"}[$__rate_interval]))",
    )];
    for (queries, what) in [(typo, "metric"), (no_data, "label value")] {
        let out = run(&queries);
        assert!(!out.status.success(), "a typo'd {what} returned data");
    }
}

#[test]
fn grafana_dashboard_configmap_renders_only_when_enabled() {
    let files = dir_files(DASHBOARD_DIR);
    let chart_dir = format!("{CHART}/files/grafana");
    assert_eq!(
        files,
        dir_files(&chart_dir),
        "{chart_dir} must hold exactly the files of {DASHBOARD_DIR}: run `make chart-dashboards`"
    );
    for file in &files {
        assert!(
            read(&format!("{DASHBOARD_DIR}/{file}")) == read(&format!("{chart_dir}/{file}")),
            "{chart_dir}/{file} differs from {DASHBOARD_DIR}/{file}: run `make chart-dashboards`"
        );
    }

    let name = format!("{RELEASE}-grafana-dashboard");
    let is_dashboard = |d: &Value| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name;
    let docs = documents(&render(NAMESPACE, &[]));
    assert!(!docs.iter().any(is_dashboard), "rendered by default");

    let docs = rendered_with(&["grafanaDashboard.enabled=true"]);
    let cm = find(&docs, "ConfigMap", &name);
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "{cm:#}");
    assert_eq!(
        cm["data"]["vultr-iam-operator.json"].as_str(),
        Some(read(DASHBOARD).as_str()),
        "the ConfigMap's JSON differs from {DASHBOARD}"
    );

    let docs = rendered_with(&[
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.label=dashboards",
        "grafanaDashboard.labelValue=vio",
        "grafanaDashboard.namespace=monitoring",
        "grafanaDashboard.annotations.grafana_folder=Operators",
    ]);
    let cm = find(&docs, "ConfigMap", &name);
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "vio", "{cm:#}");
    assert!(
        cm["metadata"]["labels"]["grafana_dashboard"].is_null(),
        "{cm:#}"
    );
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Operators");
}
