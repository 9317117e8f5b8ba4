//! What cfn-lint and `sam validate --lint` (both run by scripts/test) do not check in
//! template.yaml and deploy/*.yaml: that the function is the crate's Lambda binary on the
//! runtime it is built for, that the schedule is one EventBridge accepts, that the environment is
//! exactly what the settings read, least privilege, that nothing EventBridge delivers can be
//! dropped silently, that the alarms watch the series the auditor publishes, and that the saved
//! queries and the dashboard name what the code really logs and publishes.
//!
//! The templates are read with CloudFormation's short tags turned into their long form
//! (`!Ref X` into `{Ref: X}`, `!GetAtt A.B` into `{Fn::GetAtt: [A, B]}`), so every check reads
//! one form whichever a template uses.

use std::collections::BTreeSet;
use std::path::Path;

use ecr_replication_auditor::domain::metrics::MetricName;
use ecr_replication_auditor::settings::VARIABLES;
use serde_norway::{Mapping, Value};

use crate::support::cli::root;

/// Actions IAM only takes with `Resource: "*"`: they have no resource type (PutMetricData has
/// none for a namespace; its `cloudwatch:namespace` condition is what narrows it).
const WITHOUT_RESOURCE_TYPE: [&str; 2] = ["ecr:DescribeRegistry", "cloudwatch:PutMetricData"];

/// The counts that must raise an alarm as soon as one occurs (README.md, "Metrics").
const ALARMED_COUNTS: [MetricName; 7] = [
    MetricName::ReplicationsMissing,
    MetricName::ReplicationsFailed,
    MetricName::UntaggedCopies,
    MetricName::StaleTags,
    MetricName::DeletesMissing,
    MetricName::SourcesUnreadable,
    MetricName::StateItemsUnreadable,
];

/// The message of the handler's verdict line, which the saved queries filter on.
const VERDICT_MESSAGE: &str = "replication verdict";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Turns the short tags into their long form, recursively.
fn long_form(value: Value) -> Value {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = long_form(tagged.value);
            let inner = match (name, inner) {
                // `!GetAtt Resource.Attribute` is the string form of `[Resource, Attribute]`.
                ("GetAtt", Value::String(s)) => {
                    let (resource, attribute) = s.split_once('.').unwrap_or((&s, ""));
                    Value::Sequence(vec![resource.into(), attribute.into()])
                }
                (_, inner) => inner,
            };
            let key = match name {
                "Ref" | "Condition" => name.to_owned(),
                _ => format!("Fn::{name}"),
            };
            let mut mapping = Mapping::new();
            mapping.insert(key.into(), inner);
            Value::Mapping(mapping)
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(long_form).collect()),
        Value::Mapping(mapping) => Value::Mapping(
            mapping
                .into_iter()
                .map(|(k, v)| (k, long_form(v)))
                .collect(),
        ),
        other => other,
    }
}

struct Template {
    name: String,
    body: Value,
}

impl Template {
    fn load(relative: &str) -> Template {
        let text = read(&root().join(relative));
        let body: Value =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{relative}: {e}"));
        Template {
            name: relative.to_owned(),
            body: long_form(body),
        }
    }

    /// Every (logical id, resource) of a type.
    fn resources(&self, kind: &str) -> Vec<(&str, &Value)> {
        let Some(Value::Mapping(resources)) = self.body.get("Resources") else {
            panic!("{}: no Resources", self.name);
        };
        resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
            .map(|(id, r)| (id.as_str().unwrap_or_default(), r))
            .collect()
    }

    fn resource(&self, id: &str) -> &Value {
        self.body
            .get("Resources")
            .and_then(|r| r.get(id))
            .unwrap_or_else(|| panic!("{}: no resource {id}", self.name))
    }
}

/// template.yaml, then every template in deploy/.
fn templates() -> Vec<Template> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("deploy"))
        .expect("deploy/ holds the companion templates")
        .map(|entry| entry.expect("a readable deploy/ entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .map(|name| format!("deploy/{name}"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 2,
        "deploy/ should hold the forwarder and the read role: {names:?}"
    );
    std::iter::once("template.yaml".to_owned())
        .chain(names)
        .map(|name| Template::load(&name))
        .collect()
}

fn main_template() -> Template {
    Template::load("template.yaml")
}

/// The auditor function (the template's one AWS::Serverless::Function).
fn function(template: &Template) -> (&str, &Value) {
    let functions = template.resources("AWS::Serverless::Function");
    assert_eq!(functions.len(), 1, "one function: {functions:?}");
    functions[0]
}

fn path<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(value, |v, key| v.get(*key))
}

fn text<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a str> {
    path(value, keys).and_then(Value::as_str)
}

fn reference(name: &str) -> Value {
    let mut mapping = Mapping::new();
    mapping.insert("Ref".into(), name.into());
    Value::Mapping(mapping)
}

fn get_att(resource: &str, attribute: &str) -> Value {
    let mut mapping = Mapping::new();
    mapping.insert(
        "Fn::GetAtt".into(),
        Value::Sequence(vec![resource.into(), attribute.into()]),
    );
    Value::Mapping(mapping)
}

/// What a value can be once conditions are resolved: both branches of an `Fn::If`, nothing for
/// `AWS::NoValue`, the value itself otherwise.
fn branches(value: &Value) -> Vec<&Value> {
    if let Some(Value::Sequence(args)) = value.get("Fn::If") {
        return args.iter().skip(1).flat_map(branches).collect();
    }
    if value == &reference("AWS::NoValue") {
        return vec![];
    }
    vec![value]
}

/// A single value or a list, as a list (IAM and CloudFormation take both).
fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().flat_map(branches).collect(),
        other => branches(other),
    }
}

/// Every policy statement anywhere in a template: under any `Statement` key (IAM policies, trust
/// policies, queue and bus policies), with conditional statements counted in both branches.
fn statements(value: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                if key.as_str() == Some("Statement") {
                    found.extend(items(child));
                } else {
                    found.extend(statements(child));
                }
            }
        }
        Value::Sequence(children) => children.iter().for_each(|c| found.extend(statements(c))),
        _ => {}
    }
    found
}

/// Cargo.toml's `[[bin]]` targets as (name, path).
fn binaries() -> Vec<(String, String)> {
    let manifest = read(&root().join("Cargo.toml"));
    let mut bins: Vec<(String, String)> = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            if in_bin {
                bins.push(Default::default());
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match (in_bin, key.trim(), bins.last_mut()) {
            (true, "name", Some(bin)) => bin.0 = value,
            (true, "path", Some(bin)) => bin.1 = value,
            _ => {}
        }
    }
    bins
}

/// Why EventBridge would refuse a schedule expression, if it would: `rate(1 minute)`,
/// `rate(N minutes|hours|days)` with N > 1, or a six-field `cron(...)`.
fn schedule_problem(expression: &str) -> Option<String> {
    if let Some(inner) = expression
        .strip_prefix("rate(")
        .and_then(|e| e.strip_suffix(')'))
    {
        let Some((value, unit)) = inner.split_once(' ') else {
            return Some("a rate is `rate(value unit)`".into());
        };
        if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit())
        {
            return Some(format!("{value:?} is not a positive whole number"));
        }
        let singular = ["minute", "hour", "day"];
        let plural = ["minutes", "hours", "days"];
        return match (
            value == "1",
            singular.contains(&unit),
            plural.contains(&unit),
        ) {
            (true, true, _) | (false, _, true) => None,
            (true, _, true) => Some(format!("a rate of 1 takes a singular unit, not {unit:?}")),
            (false, true, _) => Some(format!("a rate of {value} takes a plural unit")),
            _ => Some(format!("{unit:?} is not minute(s), hour(s) or day(s)")),
        };
    }
    if let Some(inner) = expression
        .strip_prefix("cron(")
        .and_then(|e| e.strip_suffix(')'))
    {
        let fields: Vec<&str> = inner.split(' ').collect();
        if fields.len() != 6 {
            return Some(format!(
                "a cron has 6 fields (minutes hours day-of-month month day-of-week year), not {}",
                fields.len()
            ));
        }
        // (name, lowest, highest) of each field; months and weekdays may also be names.
        let ranges = [
            ("minutes", 0, 59),
            ("hours", 0, 23),
            ("day-of-month", 1, 31),
            ("month", 1, 12),
            ("day-of-week", 1, 7),
            ("year", 1970, 2199),
        ];
        for (field, (name, low, high)) in fields.iter().zip(ranges) {
            if field.is_empty()
                || !field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b",-*/?#LW".contains(&b))
            {
                return Some(format!(
                    "{name} field {field:?} has characters cron does not take"
                ));
            }
            if field.contains('?') && *field != "?" {
                return Some(format!("{name}: `?` stands alone"));
            }
            // Increments (after `/`) are counts, not values of the field.
            let values = field
                .split(',')
                .map(|part| part.split('/').next().unwrap_or(""));
            for number in values
                .flat_map(|v| v.split(['-', '#']))
                .map(|v| v.trim_end_matches(['L', 'W']))
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            {
                let n: u32 = number.parse().unwrap_or(u32::MAX);
                if n < low || n > high {
                    return Some(format!("{name} value {n} is outside {low}-{high}"));
                }
            }
        }
        let questions = [fields[2], fields[4]].iter().filter(|f| **f == "?").count();
        if questions != 1 || [0, 1, 3, 5].iter().any(|&i| fields[i] == "?") {
            return Some(
                "exactly one of day-of-month and day-of-week must be `?`, and no other field"
                    .into(),
            );
        }
        return None;
    }
    Some("neither rate(...) nor cron(...)".into())
}

/// The fields of the handler's verdict line, read from the `tracing` call that ends with its
/// message in src/app/handler.rs.
fn verdict_fields() -> BTreeSet<String> {
    let source = read(&root().join("src/app/handler.rs"));
    let quoted = format!("\"{VERDICT_MESSAGE}\"");
    let end = source
        .find(&quoted)
        .expect("src/app/handler.rs logs the verdict line");
    let start = source[..end]
        .rfind("tracing::")
        .expect("the verdict line is a tracing macro call");
    let fields: BTreeSet<String> = source[start..end]
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .collect();
    for expected in ["verdict", "latency_seconds", "destination_region"] {
        assert!(
            fields.contains(expected),
            "reading the verdict line's fields went wrong: {fields:?}"
        );
    }
    fields
}

/// The log fields a Logs Insights query reads (names it defines with `as` are not log fields),
/// and those aliases.
fn query_names(query: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const KEYWORDS: [&str; 16] = [
        "fields", "filter", "stats", "sort", "limit", "display", "dedup", "by", "as", "and", "or",
        "not", "in", "like", "asc", "desc",
    ];
    // Blank out string literals and comments: only names are left.
    let mut plain = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for line in query.lines() {
        for c in line.chars() {
            match quote {
                Some(q) => {
                    if !escaped && c == q {
                        quote = None;
                    }
                    escaped = !escaped && c == '\\';
                    plain.push(' ');
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    plain.push(' ');
                }
                None if c == '#' => break,
                None => plain.push(c),
            }
        }
        plain.push('\n');
    }
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '@' || c == '.';
    let mut tokens: Vec<&str> = Vec::new();
    let mut rest = plain.as_str();
    while let Some(c) = rest.chars().next() {
        let len = if is_name(c) {
            rest.find(|c| !is_name(c)).unwrap_or(rest.len())
        } else {
            c.len_utf8()
        };
        let (token, tail) = rest.split_at(len);
        if !token.trim().is_empty() {
            tokens.push(token);
        }
        rest = tail;
    }
    let (mut read, mut aliases) = (BTreeSet::new(), BTreeSet::new());
    for (i, token) in tokens.iter().enumerate() {
        let first = token.chars().next().unwrap_or(' ');
        let is_function = tokens.get(i + 1) == Some(&"(");
        if !is_name(first) || first.is_ascii_digit() || is_function {
            continue;
        }
        if i > 0 && tokens[i - 1].eq_ignore_ascii_case("as") {
            aliases.insert((*token).to_owned());
        } else if !KEYWORDS.contains(&token.to_ascii_lowercase().as_str()) {
            read.insert((*token).to_owned());
        }
    }
    read.retain(|name| !aliases.contains(name));
    (read, aliases)
}

#[test]
fn the_function_is_the_crates_lambda_binary_built_for_arm64_on_al2023() {
    let template = main_template();
    let (id, function) = function(&template);
    let properties = &function["Properties"];
    assert_eq!(
        text(properties, &["Runtime"]),
        Some("provided.al2023"),
        "{id}"
    );
    assert_eq!(
        properties.get("Architectures"),
        Some(&Value::Sequence(vec!["arm64".into()])),
        "{id}"
    );
    assert_eq!(text(properties, &["Handler"]), Some("bootstrap"), "{id}");
    assert_eq!(
        text(function, &["Metadata", "BuildMethod"]),
        Some("rust-cargolambda")
    );
    // SAM passes BuildProperties.Binary to `cargo lambda build --bin`; the crate has two.
    let lambda_bin = binaries()
        .into_iter()
        .find(|(_, path)| path == "src/bin/lambda.rs")
        .map(|(name, _)| name)
        .expect("Cargo.toml declares the Lambda binary, src/bin/lambda.rs");
    assert_eq!(
        text(function, &["Metadata", "BuildProperties", "Binary"]),
        Some(lambda_bin.as_str())
    );
}

#[test]
fn the_schedule_validator_accepts_and_refuses_what_eventbridge_does() {
    for good in [
        "rate(1 minute)",
        "rate(5 minutes)",
        "rate(1 hour)",
        "rate(12 hours)",
        "rate(1 day)",
        "cron(0/5 * * * ? *)",
        "cron(0 10 * * ? *)",
        "cron(15 12 ? * MON-FRI *)",
        "cron(0 8 1 * ? *)",
        "cron(0 18 ? * 6L 2030)",
    ] {
        assert_eq!(schedule_problem(good), None, "{good}");
    }
    for bad in [
        "rate(1 minutes)",
        "rate(2 minute)",
        "rate(0 minutes)",
        "rate(01 minutes)",
        "rate(-1 minutes)",
        "rate(1 second)",
        "rate(1minute)",
        "rate(1 minute",
        "every minute",
        "cron(* * * * *)",
        "cron(0 10 * * * *)",
        "cron(0 10 ? * ? *)",
        "cron(60 * * * ? *)",
        "cron(0 24 * * ? *)",
        "cron(0 10 * 13 ? *)",
        "cron(0 10 * * ? *) ",
    ] {
        assert!(schedule_problem(bad).is_some(), "{bad} was accepted");
    }
}

#[test]
fn every_schedule_expression_is_one_eventbridge_accepts() {
    let templates = templates();
    let mut found = Vec::new();
    for template in &templates {
        for (id, function) in template.resources("AWS::Serverless::Function") {
            let Some(Value::Mapping(events)) = path(function, &["Properties", "Events"]) else {
                continue;
            };
            for (name, event) in events {
                if text(event, &["Type"]) == Some("Schedule") {
                    let expression = path(event, &["Properties", "Schedule"]);
                    found.push((format!("{}: {id}.{name:?}", template.name), expression));
                }
            }
        }
        for (id, rule) in template.resources("AWS::Events::Rule") {
            if let Some(expression) = path(rule, &["Properties", "ScheduleExpression"]) {
                found.push((format!("{}: {id}", template.name), Some(expression)));
            }
        }
    }
    assert!(!found.is_empty(), "the sweep has a schedule");
    let main = main_template();
    for (place, expression) in found {
        // A schedule a parameter sets (the inventory's): its default must be one EventBridge
        // takes, and the parameter must constrain the rest.
        let expression = match expression
            .and_then(|e| e.get("Ref"))
            .and_then(Value::as_str)
        {
            Some(parameter) => {
                let p = path(&main.body, &["Parameters", parameter])
                    .unwrap_or_else(|| panic!("{place}: no parameter {parameter}"));
                assert!(
                    text(p, &["AllowedPattern"]).is_some(),
                    "{place}: {parameter} takes any text"
                );
                text(p, &["Default"])
            }
            None => expression.and_then(Value::as_str),
        }
        .unwrap_or_else(|| panic!("{place}: the schedule is not a plain string"));
        assert_eq!(schedule_problem(expression), None, "{place}: {expression}");
    }
}

#[test]
fn the_sweep_runs_every_minute() {
    let template = main_template();
    let (_, function) = function(&template);
    assert_eq!(
        text(
            function,
            &["Properties", "Events", "Sweep", "Properties", "Schedule"]
        ),
        Some("rate(1 minute)")
    );
}

#[test]
fn the_function_sets_exactly_the_variables_the_settings_read() {
    let template = main_template();
    let (_, function) = function(&template);
    let Some(Value::Mapping(variables)) =
        path(function, &["Properties", "Environment", "Variables"])
    else {
        panic!("the function has no environment variables");
    };
    let set: BTreeSet<&str> = variables.keys().filter_map(Value::as_str).collect();
    let read: BTreeSet<&str> = VARIABLES.into_iter().collect();
    assert_eq!(set, read);
}

#[test]
fn no_iam_statement_grants_a_wildcard_action() {
    let mut checked = 0;
    for template in templates() {
        for statement in statements(&template.body) {
            assert!(
                statement.get("NotAction").is_none() && statement.get("NotResource").is_none(),
                "{}: NotAction/NotResource grant everything else: {statement:?}",
                template.name
            );
            for action in statement.get("Action").map(items).unwrap_or_default() {
                let action = action.as_str().unwrap_or_else(|| {
                    panic!("{}: an action is not a string: {action:?}", template.name)
                });
                assert!(
                    !action.contains('*'),
                    "{}: wildcard action {action}",
                    template.name
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 15,
        "only {checked} actions found: is the walk broken?"
    );
}

/// Every DynamoDB operation the state store's adapter calls is granted to the function (moto
/// checks no IAM, so only this test can tell): read from the adapter's source, `.op()` calls
/// on the client. `TransactWriteItems` is authorised by `PutItem` on each item; `BatchWriteItem`
/// is `seed`'s alone (benchmarks and tests fill a table with it, the Lambda never does).
#[test]
fn the_function_may_call_every_dynamodb_operation_the_state_store_calls() {
    let template = main_template();
    let (_, function) = function(&template);
    let granted: BTreeSet<String> = statements(function)
        .into_iter()
        .flat_map(|s| s.get("Action").map(items).unwrap_or_default())
        .filter_map(|a| a.as_str())
        .filter_map(|a| a.strip_prefix("dynamodb:"))
        .map(str::to_owned)
        .collect();
    let operations = [
        ("get_item", "GetItem"),
        ("batch_get_item", "BatchGetItem"),
        ("put_item", "PutItem"),
        ("transact_write_items", "PutItem"),
        ("query", "Query"),
        ("delete_item", "DeleteItem"),
        ("update_item", "UpdateItem"),
        ("scan", "Scan"),
        ("batch_write_item", "BatchWriteItem"),
    ];
    let mut called = BTreeSet::new();
    for file in [
        "src/adapters/dynamodb.rs",
        "src/adapters/dynamodb/inventory.rs",
    ] {
        let source = read(&root().join(file));
        for (call, action) in operations {
            if source.contains(&format!(".{call}()")) && call != "batch_write_item" {
                called.insert(action.to_owned());
            }
        }
    }
    assert!(
        called.contains("DeleteItem") && called.len() >= 5,
        "the scan found {called:?}"
    );
    let missing: Vec<_> = called.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "not granted: {missing:?} (granted {granted:?})"
    );
}

#[test]
fn a_wildcard_resource_is_only_given_to_actions_without_a_resource_type() {
    let mut wildcards = 0;
    for template in templates() {
        for statement in statements(&template.body) {
            let resources = statement.get("Resource").map(items).unwrap_or_default();
            if !resources.iter().any(|r| r.as_str() == Some("*")) {
                continue;
            }
            wildcards += 1;
            let actions: Vec<&str> = statement
                .get("Action")
                .map(items)
                .unwrap_or_default()
                .into_iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                !actions.is_empty() && actions.iter().all(|a| WITHOUT_RESOURCE_TYPE.contains(a)),
                "{}: Resource \"*\" for {actions:?}; only {WITHOUT_RESOURCE_TYPE:?} have no \
                 narrower resource",
                template.name
            );
        }
    }
    // The function's DescribeRegistry and PutMetricData, the read role's DescribeRegistry.
    assert_eq!(wildcards, 3);
}

/// `sts:AssumeRole` on the read role's name in every account would let the function assume a
/// role of that name in any account at all. Each statement that allows it is narrowed to the
/// organization (`aws:ResourceOrgID`) or to the listed accounts (`aws:ResourceAccount`).
#[test]
fn the_audit_role_is_assumable_only_in_the_organization_or_the_listed_accounts() {
    let template = main_template();
    let (_, function) = function(&template);
    let mut narrowed = BTreeSet::new();
    for statement in statements(function) {
        let actions: Vec<&str> = statement
            .get("Action")
            .map(items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(Value::as_str)
            .collect();
        if !actions.contains(&"sts:AssumeRole") {
            continue;
        }
        let equals = path(statement, &["Condition", "StringEquals"])
            .unwrap_or_else(|| panic!("sts:AssumeRole without a condition: {statement:?}"));
        let (key, expected) = if let Some(v) = equals.get("aws:ResourceOrgID") {
            ("aws:ResourceOrgID", (v, reference("OrganizationId")))
        } else if let Some(v) = equals.get("aws:ResourceAccount") {
            ("aws:ResourceAccount", (v, reference("SourceAccountIds")))
        } else {
            panic!(
                "sts:AssumeRole narrowed by neither the organization nor the accounts: {statement:?}"
            );
        };
        assert_eq!(expected.0, &expected.1, "{key}");
        narrowed.insert(key);
    }
    assert_eq!(
        narrowed,
        BTreeSet::from(["aws:ResourceAccount", "aws:ResourceOrgID"]),
        "both ways, each under its own condition"
    );
}

#[test]
fn the_functions_permissions_are_all_inline_statements() {
    // A managed policy or a SAM policy template would grant actions the checks above never see.
    let template = main_template();
    let (_, function) = function(&template);
    let policies = path(function, &["Properties", "Policies"]).expect("the function has policies");
    for policy in items(policies) {
        assert!(
            policy.get("Statement").is_some(),
            "not an inline policy document: {policy:?}"
        );
    }
}

#[test]
fn every_event_source_and_rule_target_retries_then_keeps_what_it_could_not_deliver() {
    let mut checked = Vec::new();
    for template in templates() {
        for (id, function) in template.resources("AWS::Serverless::Function") {
            let Some(Value::Mapping(events)) = path(function, &["Properties", "Events"]) else {
                continue;
            };
            for (name, event) in events {
                let kind = text(event, &["Type"]).unwrap_or_default();
                assert!(
                    ["EventBridgeRule", "Schedule"].contains(&kind),
                    "{}: {id}.{name:?}: a {kind} event source this test does not check",
                    template.name
                );
                let properties = &event["Properties"];
                assert!(
                    properties.get("RetryPolicy").is_some()
                        && path(properties, &["DeadLetterConfig", "Arn"]).is_some(),
                    "{}: {id}.{name:?} needs a RetryPolicy and a DeadLetterConfig.Arn",
                    template.name
                );
                checked.push(format!("{id}.{}", name.as_str().unwrap_or_default()));
            }
        }
        for (id, rule) in template.resources("AWS::Events::Rule") {
            let targets = path(rule, &["Properties", "Targets"]).map(items);
            for target in targets.unwrap_or_default() {
                assert!(
                    target.get("RetryPolicy").is_some()
                        && path(target, &["DeadLetterConfig", "Arn"]).is_some(),
                    "{}: a target of {id} needs a RetryPolicy and a DeadLetterConfig.Arn",
                    template.name
                );
                checked.push(id.to_owned());
            }
        }
    }
    for expected in [
        "AuditorFunction.Pushes",
        "AuditorFunction.Replications",
        "AuditorFunction.Sweep",
        "InventoryRule",
        "InventoryResumeRule",
        "ForwardPushes",
        "ForwardReplications",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} missing: {checked:?}"
        );
    }
}

#[test]
fn failed_asynchronous_invocations_land_in_the_functions_dead_letter_queue() {
    let template = main_template();
    let (_, function) = function(&template);
    let dlq = path(function, &["Properties", "DeadLetterQueue"])
        .expect("the function has a dead-letter queue");
    assert_eq!(text(dlq, &["Type"]), Some("SQS"));
    let Some(Value::Sequence(arn)) = path(dlq, &["TargetArn", "Fn::GetAtt"]) else {
        panic!("the dead-letter queue is a queue of this stack: {dlq:?}");
    };
    let queue = arn[0].as_str().unwrap_or_default();
    assert_eq!(
        text(template.resource(queue), &["Type"]),
        Some("AWS::SQS::Queue")
    );
    assert!(
        path(
            function,
            &["Properties", "EventInvokeConfig", "MaximumRetryAttempts"]
        )
        .is_some(),
        "Lambda's retries of a failed invocation are stated"
    );
}

#[test]
fn every_rules_dead_letter_queue_lets_that_rule_send_to_it() {
    // SAM adds a queue policy only to queues it creates; EventBridge cannot write to one given
    // by ARN without it, and neither linter notices.
    for template in templates() {
        // (the rule's logical id, the DeadLetterConfig.Arn)
        let mut rules: Vec<(String, &Value)> = Vec::new();
        for (id, function) in template.resources("AWS::Serverless::Function") {
            if let Some(Value::Mapping(events)) = path(function, &["Properties", "Events"]) {
                for (name, event) in events {
                    let arn = path(event, &["Properties", "DeadLetterConfig", "Arn"]);
                    // SAM names the rule it generates <function><event>.
                    let rule = format!("{id}{}", name.as_str().unwrap_or_default());
                    rules.extend(arn.map(|arn| (rule, arn)));
                }
            }
        }
        for (id, rule) in template.resources("AWS::Events::Rule") {
            let targets = path(rule, &["Properties", "Targets"]).map(items);
            for target in targets.unwrap_or_default() {
                let arn = path(target, &["DeadLetterConfig", "Arn"]);
                rules.extend(arn.map(|arn| (id.to_owned(), arn)));
            }
        }
        for (rule, arn) in rules {
            let Some(Value::Sequence(att)) = arn.get("Fn::GetAtt") else {
                panic!(
                    "{}: {rule}'s dead-letter queue is not a queue of the stack",
                    template.name
                );
            };
            let queue = att[0].as_str().unwrap_or_default();
            let allowed = template
                .resources("AWS::SQS::QueuePolicy")
                .into_iter()
                .filter(|(_, policy)| {
                    path(policy, &["Properties", "Queues"])
                        .map(items)
                        .unwrap_or_default()
                        .contains(&&reference(queue))
                })
                .flat_map(|(_, policy)| statements(policy))
                .any(|s| {
                    text(s, &["Effect"]) == Some("Allow")
                        && text(s, &["Principal", "Service"]) == Some("events.amazonaws.com")
                        && s.get("Action").map(items).unwrap_or_default()
                            == vec![&Value::from("sqs:SendMessage")]
                        && path(s, &["Condition", "ArnEquals", "aws:SourceArn"])
                            .map(items)
                            .unwrap_or_default()
                            .contains(&&get_att(&rule, "Arn"))
                });
            assert!(
                allowed,
                "{}: no queue policy lets {rule} send to {queue}",
                template.name
            );
        }
    }
}

/// The one alarm on `metric`'s series without dimensions, with the properties of every count
/// alarm checked (any data point above zero, summed, missing data not breaching); its
/// properties, for the checks of its periods.
fn count_alarm<'t>(alarms: &[(&'t str, &'t Value)], metric: MetricName) -> &'t Value {
    let name = metric.as_str();
    let matching: Vec<_> = alarms
        .iter()
        .filter(|(_, a)| text(a, &["Properties", "MetricName"]) == Some(name))
        .collect();
    assert_eq!(matching.len(), 1, "one alarm on {name}");
    let (id, alarm) = *matching[0];
    let p = &alarm["Properties"];
    assert_eq!(
        p.get("Namespace"),
        Some(&reference("MetricsNamespace")),
        "{id}"
    );
    assert!(p.get("Dimensions").is_none(), "{id}: dimensionless series");
    assert_eq!(text(p, &["Statistic"]), Some("Sum"), "{id}");
    assert_eq!(
        text(p, &["ComparisonOperator"]),
        Some("GreaterThanThreshold"),
        "{id}"
    );
    assert_eq!(p.get("Threshold"), Some(&Value::from(0)), "{id}");
    assert_eq!(text(p, &["TreatMissingData"]), Some("notBreaching"), "{id}");
    p
}

#[test]
fn each_problem_count_alarms_at_its_first_occurrence_on_the_series_without_dimensions() {
    let template = main_template();
    let alarms = template.resources("AWS::CloudWatch::Alarm");
    for metric in ALARMED_COUNTS {
        count_alarm(&alarms, metric);
    }
}

/// Parked replication events are published by the next sweep a minute later: one parking is
/// no page. Parking in two of three periods (each sweep counts what it leaves) is.
#[test]
fn parked_replication_events_alarm_when_publishing_stays_broken() {
    let template = main_template();
    let alarms = template.resources("AWS::CloudWatch::Alarm");
    let p = count_alarm(&alarms, MetricName::EventsParked);
    assert_eq!(p.get("Period"), Some(&Value::from(300)));
    assert_eq!(p.get("EvaluationPeriods"), Some(&Value::from(3)));
    assert_eq!(p.get("DatapointsToAlarm"), Some(&Value::from(2)));
}

#[test]
fn the_latency_alarm_compares_the_p99_with_the_window_in_seconds() {
    let template = main_template();
    let name = MetricName::ReplicationLatency.as_str();
    let alarms: Vec<_> = template
        .resources("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, a)| text(a, &["Properties", "MetricName"]) == Some(name))
        .collect();
    assert_eq!(alarms.len(), 1, "one alarm on {name}");
    let p = &alarms[0].1["Properties"];
    assert_eq!(p.get("Namespace"), Some(&reference("MetricsNamespace")));
    assert!(p.get("Dimensions").is_none(), "dimensionless series");
    assert_eq!(text(p, &["ExtendedStatistic"]), Some("p99"));
    assert_eq!(
        text(p, &["ComparisonOperator"]),
        Some("GreaterThanThreshold")
    );
    assert_eq!(p.get("Threshold"), Some(&reference("LatencyAlarmSeconds")));
    let parameter = path(&template.body, &["Parameters", "LatencyAlarmSeconds"])
        .expect("a LatencyAlarmSeconds parameter");
    assert_eq!(text(parameter, &["Type"]), Some("Number"));
    assert_eq!(parameter.get("Default"), Some(&Value::from(1800)));
}

#[test]
fn every_alarm_in_the_namespace_watches_a_metric_the_auditor_publishes() {
    let template = main_template();
    let published: Vec<&str> = MetricName::ALL.iter().map(|m| m.as_str()).collect();
    for (id, alarm) in template.resources("AWS::CloudWatch::Alarm") {
        let p = &alarm["Properties"];
        if p.get("Namespace") == Some(&reference("MetricsNamespace")) {
            let metric = text(p, &["MetricName"]).unwrap_or_default();
            assert!(
                published.contains(&metric),
                "{id}: {metric} is never published"
            );
        }
    }
}

#[test]
fn function_errors_and_dead_letters_have_alarms() {
    let template = main_template();
    let alarms = template.resources("AWS::CloudWatch::Alarm");
    let watches = |namespace: &str, metric: &str, dimension: &str, value: &Value| {
        alarms.iter().any(|(_, a)| {
            let p = &a["Properties"];
            text(p, &["Namespace"]) == Some(namespace)
                && text(p, &["MetricName"]) == Some(metric)
                && p.get("Dimensions")
                    .map(items)
                    .unwrap_or_default()
                    .iter()
                    .any(|d| text(d, &["Name"]) == Some(dimension) && d.get("Value") == Some(value))
                && text(p, &["ComparisonOperator"]) == Some("GreaterThanThreshold")
                && p.get("Threshold") == Some(&Value::from(0))
        })
    };
    assert!(watches(
        "AWS/Lambda",
        "Errors",
        "FunctionName",
        &reference("AuditorFunction")
    ));
    assert!(watches(
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        &get_att("DeadLetterQueue", "QueueName")
    ));
}

#[test]
fn alarms_notify_the_topic_only_when_an_address_is_given() {
    let template = main_template();
    let topic = template.resource("AlarmTopic");
    assert_eq!(text(topic, &["Condition"]), Some("HasAlarmEmail"));
    let mut conditional = Mapping::new();
    conditional.insert(
        "Fn::If".into(),
        Value::Sequence(vec![
            "HasAlarmEmail".into(),
            Value::Sequence(vec![reference("AlarmTopic")]),
            reference("AWS::NoValue"),
        ]),
    );
    let conditional = Value::Mapping(conditional);
    for (id, alarm) in template.resources("AWS::CloudWatch::Alarm") {
        assert_eq!(
            path(alarm, &["Properties", "AlarmActions"]),
            Some(&conditional),
            "{id}"
        );
    }
}

#[test]
fn the_saved_queries_read_only_fields_the_handler_logs() {
    let template = main_template();
    let logged = verdict_fields();
    let builtin = ["@timestamp", "@message", "@logStream", "@log"];
    let queries = template.resources("AWS::Logs::QueryDefinition");
    assert!(
        queries.len() >= 3,
        "slowest copies, problem copies, lag per destination"
    );
    for (id, query) in queries {
        let p = &query["Properties"];
        assert_eq!(
            p.get("LogGroupNames"),
            Some(&Value::Sequence(vec![reference("FunctionLogGroup")])),
            "{id}"
        );
        let string = text(p, &["QueryString"]).unwrap_or_default();
        assert!(
            string.contains(&format!("message = \"{VERDICT_MESSAGE}\"")),
            "{id} reads the verdict lines"
        );
        let (read, _) = query_names(string);
        let unknown: Vec<&String> = read
            .iter()
            .filter(|name| {
                !logged.contains(*name) && *name != "message" && !builtin.contains(&name.as_str())
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "{id} reads {unknown:?}, which the verdict line does not have ({logged:?})"
        );
    }
    // The queries name the function's own log group.
    let mut sub = Mapping::new();
    sub.insert("Fn::Sub".into(), "/aws/lambda/${AuditorFunction}".into());
    assert_eq!(
        path(
            template.resource("FunctionLogGroup"),
            &["Properties", "LogGroupName"]
        ),
        Some(&Value::Mapping(sub))
    );
}

#[test]
fn the_query_reader_finds_fields_functions_and_aliases() {
    let (read, aliases) = query_names(
        "fields @timestamp, verdict # a comment naming nothing\n\
         | filter message = \"a, b\" and ispresent(latency_seconds) and x in ['y']\n\
         | stats pct(latency_seconds, 99) as p99 by bin(1h) as hour, destination_region\n\
         | sort hour desc | limit 10",
    );
    let read: Vec<&str> = read.iter().map(String::as_str).collect();
    assert_eq!(
        read,
        [
            "@timestamp",
            "destination_region",
            "latency_seconds",
            "message",
            "verdict",
            "x"
        ]
    );
    let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
    assert_eq!(aliases, ["hour", "p99"]);
}

#[test]
fn the_dashboard_is_valid_json_and_graphs_every_published_metric() {
    let template = main_template();
    let dashboards = template.resources("AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1);
    let body = text(dashboards[0].1, &["Properties", "DashboardBody", "Fn::Sub"])
        .expect("the dashboard body is one Fn::Sub string");
    // Every ${...} stands for a name, an ARN or a number: 0 keeps the JSON's shape.
    let mut json = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').expect("a closed ${...}") + start;
        json.push_str(&rest[..start]);
        json.push('0');
        rest = &rest[end + 1..];
    }
    json.push_str(rest);
    let parsed: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("dashboard body: {e}\n{json}"));
    assert!(parsed["widgets"].as_array().is_some_and(|w| !w.is_empty()));
    for metric in MetricName::ALL {
        assert!(
            body.contains(&format!("\"{}\"", metric.as_str()))
                || body.contains(&format!("MetricName=\\\"{}\\\"", metric.as_str())),
            "the dashboard does not graph {}",
            metric.as_str()
        );
    }
}

/// The event log's resources, which exist only with `EventLog=true` (the default).
fn event_log(template: &Template) -> (&Value, &Value, &Value) {
    let group = template.resource("EventLogGroup");
    let policy = template.resource("EventLogPolicy");
    let rule = template.resource("EventLogRule");
    for (id, resource) in [
        ("EventLogGroup", group),
        ("EventLogPolicy", policy),
        ("EventLogRule", rule),
    ] {
        assert_eq!(
            text(resource, &["Condition"]),
            Some("HasEventLog"),
            "{id} exists only with the event log"
        );
    }
    (group, policy, rule)
}

#[test]
fn the_event_log_is_on_by_default_and_kept_400_days_a_retention_cloudwatch_logs_allows() {
    let template = main_template();
    let parameters = &template.body["Parameters"];
    assert_eq!(text(&parameters["EventLog"], &["Default"]), Some("true"));
    let condition = path(&template.body, &["Conditions", "HasEventLog", "Fn::Equals"])
        .expect("HasEventLog compares the parameter");
    assert_eq!(
        condition,
        &Value::Sequence(vec![reference("EventLog"), "true".into()])
    );

    // PutRetentionPolicy's retentionInDays: the only values CloudWatch Logs takes.
    let allowed: Vec<u64> = vec![
        1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
        2922, 3288, 3653,
    ];
    let retention = &parameters["EventLogRetentionDays"];
    assert_eq!(retention["Default"].as_u64(), Some(400));
    let listed: Vec<u64> = items(&retention["AllowedValues"])
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(listed, allowed);

    let (group, _, _) = event_log(&template);
    assert_eq!(
        path(group, &["Properties", "RetentionInDays"]),
        Some(&reference("EventLogRetentionDays"))
    );
    assert_eq!(
        text(group, &["DeletionPolicy"]),
        Some("Retain"),
        "the evidence outlives the stack, as the state table does"
    );
}

#[test]
fn the_event_log_rule_sends_every_ecr_image_and_replication_event_of_the_auditors_bus_to_the_log_group()
 {
    let template = main_template();
    let (_, _, rule) = event_log(&template);
    let (_, function) = function(&template);
    // The bus the function's own rules read.
    let bus = path(
        function,
        &[
            "Properties",
            "Events",
            "Pushes",
            "Properties",
            "EventBusName",
        ],
    );
    assert_eq!(path(rule, &["Properties", "EventBusName"]), bus);

    let pattern = path(rule, &["Properties", "EventPattern"]).unwrap();
    assert_eq!(items(&pattern["source"]), vec![&Value::from("aws.ecr")]);
    let kinds: Vec<&str> = items(&pattern["detail-type"])
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(kinds, ["ECR Image Action", "ECR Replication Action"]);
    assert!(
        pattern.get("detail").is_none(),
        "no action type or result is left out: pushes, deletes, restores, failures"
    );

    let targets = items(path(rule, &["Properties", "Targets"]).unwrap());
    assert_eq!(targets.len(), 1);
    let target = targets[0];
    assert!(
        target.get("RoleArn").is_none(),
        "EventBridge writes to CloudWatch Logs under the group's resource policy, not a role"
    );
    // The ARN without the ":*" of the group's Arn attribute: a target in that form receives
    // nothing.
    assert_eq!(
        text(target, &["Arn", "Fn::Sub"]),
        Some(
            "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${EventLogGroup}"
        )
    );
}

#[test]
fn the_event_log_groups_policy_lets_eventbridge_create_streams_and_put_events_there_and_nothing_else()
 {
    let template = main_template();
    let (_, policy, rule) = event_log(&template);
    let document = text(policy, &["Properties", "PolicyDocument", "Fn::Sub"])
        .expect("the policy is one Fn::Sub JSON string");
    let document: serde_json::Value = serde_json::from_str(document)
        .unwrap_or_else(|e| panic!("the event log's policy is not JSON: {e}"));
    let statements = document["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    let statement = &statements[0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(
        statement["Principal"]["Service"],
        serde_json::json!(["events.amazonaws.com", "delivery.logs.amazonaws.com"])
    );
    assert_eq!(
        statement["Action"],
        serde_json::json!(["logs:CreateLogStream", "logs:PutLogEvents"])
    );
    assert_eq!(
        statement["Resource"], "${EventLogGroup.Arn}",
        "this log group (and its streams) only"
    );
    assert_eq!(
        text(rule, &["DependsOn"]),
        Some("EventLogPolicy"),
        "the rule delivers only once the policy exists"
    );
}

#[test]
fn the_stack_names_its_event_log_and_the_forwarders_send_the_deletes_and_restores_it_keeps() {
    let template = main_template();
    let output = path(&template.body, &["Outputs", "EventLogGroupName"])
        .expect("an output names the event log");
    assert_eq!(output["Value"], reference("EventLogGroup"));
    assert_eq!(text(output, &["Condition"]), Some("HasEventLog"));

    let forwarder = Template::load("deploy/forwarder.yaml");
    let pushes = forwarder.resource("ForwardPushes");
    let actions: Vec<&str> = path(
        pushes,
        &["Properties", "EventPattern", "detail", "action-type"],
    )
    .map(items)
    .unwrap_or_default()
    .into_iter()
    .filter_map(Value::as_str)
    .collect();
    assert_eq!(actions, ["PUSH", "DELETE", "UPDATE_STORAGE_CLASS"]);
    // The function receives pushes, deletes (withdrawn copies, delete replication) and restores.
    let (_, function) = function(&template);
    let function_actions = path(
        function,
        &[
            "Properties",
            "Events",
            "Pushes",
            "Properties",
            "Pattern",
            "detail",
            "action-type",
        ],
    )
    .map(items)
    .unwrap_or_default();
    assert_eq!(
        function_actions,
        vec![
            &Value::from("PUSH"),
            &Value::from("DELETE"),
            &Value::from("UPDATE_STORAGE_CLASS")
        ]
    );
}

#[test]
fn the_inventory_runs_every_six_hours_by_default_and_not_at_all_when_its_schedule_is_empty() {
    let template = main_template();
    let parameter = path(&template.body, &["Parameters", "InventorySchedule"])
        .expect("an InventorySchedule parameter");
    assert_eq!(text(parameter, &["Default"]), Some("rate(6 hours)"));
    let condition = path(&template.body, &["Conditions", "HasInventorySchedule"])
        .expect("a HasInventorySchedule condition");
    let mut equals = Mapping::new();
    equals.insert(
        "Fn::Equals".into(),
        Value::Sequence(vec![reference("InventorySchedule"), "".into()]),
    );
    let mut not = Mapping::new();
    not.insert(
        "Fn::Not".into(),
        Value::Sequence(vec![Value::Mapping(equals)]),
    );
    assert_eq!(condition, &Value::Mapping(not));
    // Both rules, their permissions to invoke the function, and nothing else depend on it.
    for id in [
        "InventoryRule",
        "InventoryResumeRule",
        "InventoryRulePermission",
        "InventoryResumeRulePermission",
    ] {
        assert_eq!(
            text(template.resource(id), &["Condition"]),
            Some("HasInventorySchedule"),
            "{id}"
        );
    }
    let input = |rule: &str| -> serde_json::Value {
        let targets = path(template.resource(rule), &["Properties", "Targets"]).unwrap();
        let target = items(targets)[0];
        assert_eq!(target.get("Arn"), Some(&get_att("AuditorFunction", "Arn")));
        serde_json::from_str(text(target, &["Input"]).unwrap()).unwrap()
    };
    assert_eq!(
        path(
            template.resource("InventoryRule"),
            &["Properties", "ScheduleExpression"]
        ),
        Some(&reference("InventorySchedule"))
    );
    assert_eq!(
        ecr_replication_auditor::app::inventory::inventory_request(&input("InventoryRule")),
        Some(true),
        "the schedule starts a pass"
    );
    assert_eq!(
        ecr_replication_auditor::app::inventory::inventory_request(&input("InventoryResumeRule")),
        Some(false),
        "the resume only carries one on"
    );
    for permission in ["InventoryRulePermission", "InventoryResumeRulePermission"] {
        let p = &template.resource(permission)["Properties"];
        assert_eq!(text(p, &["Principal"]), Some("events.amazonaws.com"));
        assert_eq!(p.get("FunctionName"), Some(&reference("AuditorFunction")));
    }
}

#[test]
fn the_function_and_the_read_role_may_list_repositories_and_read_their_policies() {
    for template in templates() {
        if template.name == "deploy/forwarder.yaml" {
            continue;
        }
        let granted: BTreeSet<&str> = statements(&template.body)
            .into_iter()
            .filter(|s| text(s, &["Effect"]) == Some("Allow"))
            .flat_map(|s| s.get("Action").map(items).unwrap_or_default())
            .filter_map(Value::as_str)
            .collect();
        for action in [
            "ecr:DescribeRegistry",
            "ecr:DescribeRepositories",
            "ecr:DescribeImages",
            "ecr:GetLifecyclePolicy",
            "ecr:GetRepositoryPolicy",
        ] {
            assert!(granted.contains(action), "{}: {action}", template.name);
        }
    }
}

#[test]
fn dr_readiness_alarms_when_any_destination_misses_an_image_and_holds_between_passes() {
    let template = main_template();
    let name = MetricName::ImagesMissingAtDestination.as_str();
    let alarms: Vec<_> = template
        .resources("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, a)| text(a, &["Properties", "MetricName"]) == Some(name))
        .collect();
    assert_eq!(alarms.len(), 1, "one alarm on {name}");
    let p = &alarms[0].1["Properties"];
    assert_eq!(p.get("Namespace"), Some(&reference("MetricsNamespace")));
    assert!(
        p.get("Dimensions").is_none(),
        "dimensionless: every destination"
    );
    assert_eq!(text(p, &["Statistic"]), Some("Maximum"));
    assert_eq!(
        text(p, &["ComparisonOperator"]),
        Some("GreaterThanThreshold")
    );
    assert_eq!(p.get("Threshold"), Some(&Value::from(0)));
    // Published once per pass: no data between passes is no news either way.
    assert_eq!(text(p, &["TreatMissingData"]), Some("ignore"));
}

// ---------------------------------------------------------------------------------------------
// Where replication events may go
// ---------------------------------------------------------------------------------------------

/// The pseudo parameters a deployment resolves, as one stack would see them.
const PARTITION: &str = "aws";
const STACK_REGION: &str = "us-east-1";
const STACK_ACCOUNT: &str = "111122223333";

/// template.yaml as CloudFormation resolves it for one set of parameter values (the defaults,
/// some overridden): conditions evaluated, `Fn::If` branches chosen, `AWS::NoValue` dropped,
/// parameters and pseudo parameters substituted. What only exists once deployed (`Ref` to a
/// resource, `Fn::GetAtt`) stays as it is written.
struct Deployment<'a> {
    template: &'a Template,
    parameters: std::collections::BTreeMap<String, Value>,
}

impl<'a> Deployment<'a> {
    fn new(template: &'a Template, overrides: &[(&str, &str)]) -> Self {
        let Some(Value::Mapping(declared)) = template.body.get("Parameters") else {
            panic!("{}: no Parameters", template.name);
        };
        let mut parameters = std::collections::BTreeMap::new();
        for (name, parameter) in declared {
            let name = name.as_str().expect("a parameter's name").to_owned();
            let value = match parameter.get("Default") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => String::new(),
            };
            parameters.insert(name, value);
        }
        for (name, value) in overrides {
            assert!(
                parameters.contains_key(*name),
                "{}: no parameter {name}",
                template.name
            );
            parameters.insert((*name).to_owned(), (*value).to_owned());
        }
        let parameters = parameters
            .into_iter()
            .map(|(name, value)| {
                let list = text(&declared[name.as_str()], &["Type"]) == Some("CommaDelimitedList");
                let value = if list {
                    Value::Sequence(value.split(',').map(Value::from).collect())
                } else {
                    Value::from(value)
                };
                (name, value)
            })
            .collect();
        Deployment {
            template,
            parameters,
        }
    }

    fn string(&self, value: &Value) -> String {
        match self.resolve(value) {
            Some(Value::String(s)) => s,
            other => panic!("not a string once resolved: {value:?} -> {other:?}"),
        }
    }

    /// Whether a condition (by name) holds.
    fn condition(&self, name: &str) -> bool {
        let condition = path(&self.template.body, &["Conditions", name])
            .unwrap_or_else(|| panic!("{}: no condition {name}", self.template.name));
        self.holds(condition)
    }

    fn holds(&self, condition: &Value) -> bool {
        let args = |key: &str| match condition.get(key) {
            Some(Value::Sequence(args)) => Some(args),
            _ => None,
        };
        if let Some(name) = text(condition, &["Condition"]) {
            self.condition(name)
        } else if let Some(args) = args("Fn::Equals") {
            self.resolve(&args[0]) == self.resolve(&args[1])
        } else if let Some(args) = args("Fn::Not") {
            !self.holds(&args[0])
        } else if let Some(args) = args("Fn::And") {
            args.iter().all(|c| self.holds(c))
        } else if let Some(args) = args("Fn::Or") {
            args.iter().any(|c| self.holds(c))
        } else {
            panic!("not a condition: {condition:?}")
        }
    }

    /// The value as deployed; `None` for `AWS::NoValue`.
    fn resolve(&self, value: &Value) -> Option<Value> {
        match value {
            Value::Mapping(mapping) if mapping.len() == 1 => {
                let (key, arg) = mapping.iter().next().unwrap();
                let seq = || match arg {
                    Value::Sequence(args) => args.as_slice(),
                    _ => panic!("{key:?} takes a list: {arg:?}"),
                };
                match key.as_str().unwrap_or_default() {
                    "Ref" => self.reference(arg.as_str().expect("Ref names a string")),
                    "Fn::If" => {
                        let args = seq();
                        let name = args[0].as_str().expect("Fn::If names a condition");
                        let branch = if self.condition(name) { 1 } else { 2 };
                        self.resolve(&args[branch])
                    }
                    "Fn::Sub" => Some(Value::from(self.sub(arg))),
                    "Fn::Join" => {
                        let args = seq();
                        let parts = self.resolve(&args[1]);
                        let Some(Value::Sequence(parts)) = parts else {
                            panic!("Fn::Join of {parts:?}")
                        };
                        let parts: Vec<&str> = parts
                            .iter()
                            .map(|p| p.as_str().unwrap_or_default())
                            .collect();
                        Some(Value::from(
                            parts.join(args[0].as_str().unwrap_or_default()),
                        ))
                    }
                    "Fn::Split" => {
                        let args = seq();
                        let s = self.string(&args[1]);
                        let delimiter = args[0].as_str().expect("a delimiter");
                        Some(Value::Sequence(
                            s.split(delimiter).map(Value::from).collect(),
                        ))
                    }
                    "Fn::Select" => {
                        let args = seq();
                        let index = match &args[0] {
                            Value::Number(n) => n.as_u64().unwrap() as usize,
                            other => self.string(other).parse().unwrap(),
                        };
                        let Some(Value::Sequence(list)) = self.resolve(&args[1]) else {
                            panic!("Fn::Select from {:?}", args[1])
                        };
                        Some(list[index].clone())
                    }
                    _ => Some(self.resolve_mapping(mapping)),
                }
            }
            Value::Mapping(mapping) => Some(self.resolve_mapping(mapping)),
            Value::Sequence(items) => Some(Value::Sequence(
                items.iter().filter_map(|v| self.resolve(v)).collect(),
            )),
            other => Some(other.clone()),
        }
    }

    fn resolve_mapping(&self, mapping: &Mapping) -> Value {
        Value::Mapping(
            mapping
                .iter()
                .filter_map(|(k, v)| self.resolve(v).map(|v| (k.clone(), v)))
                .collect(),
        )
    }

    fn reference(&self, name: &str) -> Option<Value> {
        match name {
            "AWS::NoValue" => None,
            "AWS::Partition" => Some(PARTITION.into()),
            "AWS::Region" => Some(STACK_REGION.into()),
            "AWS::AccountId" => Some(STACK_ACCOUNT.into()),
            _ => Some(
                self.parameters
                    .get(name)
                    .cloned()
                    // A resource: known once deployed.
                    .unwrap_or_else(|| reference(name)),
            ),
        }
    }

    /// `Fn::Sub` on parameters and pseudo parameters (a `${Resource.Attribute}` stays written).
    fn sub(&self, arg: &Value) -> String {
        let (mut s, vars) = match arg {
            Value::String(s) => (s.clone(), None),
            Value::Sequence(args) => (
                args[0].as_str().expect("Fn::Sub's string").to_owned(),
                args.get(1),
            ),
            other => panic!("Fn::Sub of {other:?}"),
        };
        let mut names: Vec<String> = self.parameters.keys().cloned().collect();
        names.extend(["AWS::Partition", "AWS::Region", "AWS::AccountId"].map(String::from));
        if let Some(Value::Mapping(vars)) = vars {
            names.extend(vars.keys().filter_map(Value::as_str).map(String::from));
        }
        for name in names {
            let placeholder = format!("${{{name}}}");
            if !s.contains(&placeholder) {
                continue;
            }
            let value = match vars.and_then(|v| v.get(name.as_str())) {
                Some(v) => self.string(v),
                None => self.string(&reference(&name)),
            };
            s = s.replace(&placeholder, &value);
        }
        s
    }
}

/// The `events:PutEvents` statements of the deployed function's policies.
fn put_events_statements(function: &Value) -> Vec<Value> {
    statements(function)
        .into_iter()
        .filter(|s| {
            s.get("Action")
                .map(items)
                .unwrap_or_default()
                .iter()
                .any(|a| a.as_str() == Some("events:PutEvents"))
        })
        .cloned()
        .collect()
}

#[test]
fn replication_events_may_be_put_only_on_the_bus_the_parameter_names_and_nowhere_when_it_is_empty()
{
    let template = main_template();
    let parameter = path(&template.body, &["Parameters", "ReplicationEventsBus"])
        .expect("a ReplicationEventsBus parameter");
    assert_eq!(
        text(parameter, &["Default"]),
        Some("auditor"),
        "on by default, on the auditor's own bus"
    );
    let (id, function) = function(&template);
    let arn = |bus: &str| {
        format!("arn:{PARTITION}:events:{STACK_REGION}:{STACK_ACCOUNT}:event-bus/{bus}")
    };
    let other_arn = "arn:aws:events:eu-west-1:999988887777:event-bus/platform-events";
    // (parameters, the statement's Resource, EVENTS_BUS), or no statement and no EVENTS_BUS.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<(Value, Value)>);
    let cases: [Case; 6] = [
        // The defaults: the auditor's own bus, which the stack creates.
        (
            &[],
            Some((get_att("EventBus", "Arn"), reference("EventBus"))),
        ),
        // The auditor's own bus, an existing one.
        (
            &[("EventBusName", "ecr-events")],
            Some((arn("ecr-events").into(), "ecr-events".into())),
        ),
        (
            &[
                ("ReplicationEventsBus", "auditor"),
                ("EventBusName", "ecr-events"),
            ],
            Some((arn("ecr-events").into(), "ecr-events".into())),
        ),
        // Another bus of the stack's account and Region, by name.
        (
            &[("ReplicationEventsBus", "team-events")],
            Some((arn("team-events").into(), "team-events".into())),
        ),
        // Another bus anywhere, by ARN: as it is.
        (
            &[("ReplicationEventsBus", other_arn)],
            Some((other_arn.into(), other_arn.into())),
        ),
        // None.
        (&[("ReplicationEventsBus", "")], None),
    ];
    for (parameters, expected) in cases {
        let deployment = Deployment::new(&template, parameters);
        let deployed = deployment
            .resolve(function)
            .unwrap_or_else(|| panic!("{id} exists whatever the parameters"));
        let put_events = put_events_statements(&deployed);
        let variables = path(&deployed, &["Properties", "Environment", "Variables"])
            .expect("the function's environment");
        let events_bus = variables.get("EVENTS_BUS");
        // What the function reads: a resource's Ref is its name once deployed.
        let settings = ecr_replication_auditor::settings::Settings::from_lookup(|name| {
            variables.get(name).map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => text(other, &["Ref"])
                    .unwrap_or_else(|| panic!("{name}: {other:?}"))
                    .to_owned(),
            })
        })
        .unwrap_or_else(|e| panic!("{parameters:?}: the settings refuse the environment: {e}"));
        match expected {
            Some((resource, bus)) => {
                assert_eq!(put_events.len(), 1, "{parameters:?}: {put_events:?}");
                let statement = &put_events[0];
                assert_eq!(text(statement, &["Effect"]), Some("Allow"));
                assert_eq!(
                    statement.get("Action"),
                    Some(&Value::from("events:PutEvents")),
                    "{parameters:?}: PutEvents alone"
                );
                assert_eq!(
                    statement.get("Resource"),
                    Some(&resource),
                    "{parameters:?}: exactly the one bus"
                );
                assert!(statement.get("Condition").is_none(), "{statement:?}");
                assert_eq!(events_bus, Some(&bus), "{parameters:?}: EVENTS_BUS");
                assert!(settings.events_bus.is_some(), "{parameters:?}: events on");
                if parameters
                    .iter()
                    .all(|(name, value)| *name != "ReplicationEventsBus" || *value == "auditor")
                {
                    // `auditor` is the bus the function's own rules read.
                    let rules_bus = path(
                        &deployed,
                        &[
                            "Properties",
                            "Events",
                            "Pushes",
                            "Properties",
                            "EventBusName",
                        ],
                    );
                    assert_eq!(
                        rules_bus,
                        Some(&bus),
                        "{parameters:?}: the auditor's own bus"
                    );
                }
            }
            None => {
                assert!(
                    put_events.is_empty(),
                    "no events, no permission to put any: {put_events:?}"
                );
                assert!(
                    events_bus.is_none_or(|v| v.as_str() == Some("")),
                    "EVENTS_BUS absent or empty: {events_bus:?}"
                );
                assert_eq!(settings.events_bus, None, "events off");
            }
        }
    }
}
