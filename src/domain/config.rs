//! A Region's replication configuration, validated against ECR's limits, and the one question
//! the auditor asks of it: which destinations must receive a push to this repository?
//!
//! ECR replicates once per push and never chains: an image pushed to R lands in the destinations
//! of R's own rules, and the copies do not fan out again. So the expected destinations of a push
//! are exactly the destinations of the push Region's matching rules.

use std::fmt;

use serde_json::Value;

use super::ids::{AccountId, InvalidValue, Region, RepositoryName, quoted};

/// ECR's quota: at most 25 unique destinations across all rules (not adjustable).
pub const MAX_DESTINATIONS: usize = 25;
/// ECR's quota: at most 100 repository filters per rule.
pub const MAX_FILTERS_PER_RULE: usize = 100;
/// Rules per configuration: 10 in the quota table, 25 in the newest API reference. Past 10 the
/// auditor warns rather than refuses, since the limit is not settled.
pub const RULES_WARNING_THRESHOLD: usize = 10;

/// Where a copy must land: a Region of a registry (account).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Destination {
    pub account: AccountId,
    pub region: Region,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

/// One replication rule. An empty filter list covers every repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub destinations: Vec<Destination>,
    /// `PREFIX_MATCH` filters, the only filter type ECR has.
    pub prefixes: Vec<String>,
    /// `"deleteReplication": {"enabled": true}`: ECR also applies, in every destination of this
    /// rule, the deletes made in the source (a tag removed, an image's last tag removed, an
    /// image deleted by digest, a lifecycle expiry). Off when absent: by default ECR "does not
    /// replicate deletions".
    pub delete_replication: bool,
}

impl Rule {
    pub fn covers(&self, repository: &RepositoryName) -> bool {
        self.prefixes.is_empty()
            || self
                .prefixes
                .iter()
                .any(|p| repository.as_str().starts_with(p.as_str()))
    }
}

/// The replication configuration of one registry (account) in one Region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    pub registry: AccountId,
    pub region: Region,
    pub rules: Vec<Rule>,
    /// Things worth a warning that do not make the configuration unusable.
    pub warnings: Vec<String>,
}

/// Why a configuration document was refused: which rule, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {problem}", rule.map(|i| format!("rule {i}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub rule: Option<usize>,
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(rule: Option<usize>, field: impl Into<String>, problem: impl fmt::Display) -> Self {
        ConfigError {
            rule,
            field: field.into(),
            problem: problem.to_string(),
        }
    }
}

/// The expected destinations of one push (or restore, or delete), and whether a rule named the push's own registry and
/// Region (which ECR cannot replicate to; the auditor drops it and says so).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub destinations: Vec<Destination>,
    pub dropped_self: bool,
}

impl ReplicationConfig {
    /// Reads either the output of `aws ecr describe-registry` (`registryId` and
    /// `replicationConfiguration`) or the bare `{"rules": [...]}` document that
    /// `put-replication-configuration` takes, in which case `registry_id` must be given.
    pub fn from_json(
        doc: &Value,
        region: Region,
        registry_id: Option<AccountId>,
    ) -> Result<Self, ConfigError> {
        let obj = doc
            .as_object()
            .ok_or_else(|| ConfigError::new(None, "(document)", "is not a JSON object"))?;
        let (registry, rules_doc, rules_field) =
            if let Some(config) = obj.get("replicationConfiguration") {
                let id = match obj.get("registryId") {
                    Some(Value::String(s)) => {
                        AccountId::parse(s).map_err(|e| ConfigError::new(None, "registryId", e))?
                    }
                    Some(_) => return Err(ConfigError::new(None, "registryId", "is not a string")),
                    None => registry_id.ok_or_else(|| {
                        ConfigError::new(None, "registryId", "is missing (give --registry-id)")
                    })?,
                };
                let rules = config
                    .as_object()
                    .ok_or_else(|| {
                        ConfigError::new(None, "replicationConfiguration", "is not a JSON object")
                    })?
                    .get("rules");
                (id, rules, "replicationConfiguration.rules")
            } else if obj.contains_key("rules") {
                let id = registry_id.ok_or_else(|| {
                    ConfigError::new(
                        None,
                        "registryId",
                        "a bare {\"rules\": [...]} document needs --registry-id",
                    )
                })?;
                (id, obj.get("rules"), "rules")
            } else if obj.contains_key("registryId") {
                // describe-registry on a registry with no replication: nothing is expected.
                let id = match obj.get("registryId") {
                    Some(Value::String(s)) => {
                        AccountId::parse(s).map_err(|e| ConfigError::new(None, "registryId", e))?
                    }
                    _ => return Err(ConfigError::new(None, "registryId", "is not a string")),
                };
                (id, None, "replicationConfiguration.rules")
            } else {
                return Err(ConfigError::new(
                    None,
                    "(document)",
                    "has neither replicationConfiguration (describe-registry output) nor rules",
                ));
            };

        let rules = match rules_doc {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, r)| parse_rule(i, r))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(ConfigError::new(None, rules_field, "is not a list")),
        };

        let mut unique: Vec<&Destination> = rules.iter().flat_map(|r| &r.destinations).collect();
        unique.sort();
        unique.dedup();
        if unique.len() > MAX_DESTINATIONS {
            return Err(ConfigError::new(
                None,
                rules_field,
                format!(
                    "name {} unique destinations; ECR allows at most {MAX_DESTINATIONS}",
                    unique.len()
                ),
            ));
        }
        let mut warnings = Vec::new();
        if rules.len() > RULES_WARNING_THRESHOLD {
            warnings.push(format!(
                "{} rules: the ECR quota table allows {RULES_WARNING_THRESHOLD} (the API reference 25)",
                rules.len()
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            if rule
                .destinations
                .iter()
                .any(|d| d.account == registry && d.region == region)
            {
                warnings.push(format!(
                    "rule {i}: names this registry's own Region {region} as a destination; ECR does not replicate there, so it is ignored"
                ));
            }
        }
        Ok(ReplicationConfig {
            registry,
            region,
            rules,
            warnings,
        })
    }

    /// The destinations that must receive an image pushed to `repository` in this registry and
    /// Region: the union of the destinations of every rule that covers the repository,
    /// deduplicated, without this registry's own Region.
    pub fn expected_destinations(&self, repository: &RepositoryName) -> Expected {
        self.destinations_of(repository, |_| true)
    }

    /// The destinations that must apply a delete made in `repository` in this registry and
    /// Region: those of the rules that cover the repository *and* have delete replication on,
    /// deduplicated, without this registry's own Region. ECR applies a rule's delete replication
    /// to that rule's destinations only; a destination that a rule without it also names still
    /// gets the delete from the rule that has it (AWS documents nothing about a destination
    /// named by both kinds of rule: this is the reading that never misses a promised delete).
    pub fn delete_destinations(&self, repository: &RepositoryName) -> Expected {
        self.destinations_of(repository, |rule| rule.delete_replication)
    }

    /// Whether a delete made in `repository` in this registry and Region must be applied in
    /// `destination` (one of [`ReplicationConfig::delete_destinations`]).
    pub fn replicates_deletes_to(
        &self,
        repository: &RepositoryName,
        destination: &Destination,
    ) -> bool {
        self.delete_destinations(repository)
            .destinations
            .contains(destination)
    }

    fn destinations_of(
        &self,
        repository: &RepositoryName,
        keep: impl Fn(&Rule) -> bool,
    ) -> Expected {
        let mut expected = Expected::default();
        for rule in self
            .rules
            .iter()
            .filter(|r| r.covers(repository) && keep(r))
        {
            for d in &rule.destinations {
                if d.account == self.registry && d.region == self.region {
                    expected.dropped_self = true;
                } else if !expected.destinations.contains(d) {
                    expected.destinations.push(d.clone());
                }
            }
        }
        expected
    }
}

fn parse_rule(index: usize, rule: &Value) -> Result<Rule, ConfigError> {
    let at = Some(index);
    let obj = rule
        .as_object()
        .ok_or_else(|| ConfigError::new(at, "(rule)", "is not a JSON object"))?;
    let destinations = match obj.get("destinations") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(j, d)| parse_destination(index, j, d))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ConfigError::new(
                at,
                "destinations",
                "is empty; a rule needs one",
            ));
        }
        Some(_) => return Err(ConfigError::new(at, "destinations", "is not a list")),
        None => return Err(ConfigError::new(at, "destinations", "is missing")),
    };
    let prefixes = match obj.get("repositoryFilters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_FILTERS_PER_RULE {
                return Err(ConfigError::new(
                    at,
                    "repositoryFilters",
                    format!(
                        "has {} filters; ECR allows at most {MAX_FILTERS_PER_RULE}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(j, f)| parse_filter(index, j, f))
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(ConfigError::new(at, "repositoryFilters", "is not a list")),
    };
    let delete_replication = match obj.get("deleteReplication") {
        None | Some(Value::Null) => false,
        Some(Value::Object(d)) => match d.get("enabled") {
            Some(Value::Bool(on)) => *on,
            Some(_) => {
                return Err(ConfigError::new(
                    at,
                    "deleteReplication.enabled",
                    "is not a boolean",
                ));
            }
            None => {
                return Err(ConfigError::new(
                    at,
                    "deleteReplication.enabled",
                    "is missing",
                ));
            }
        },
        Some(_) => {
            return Err(ConfigError::new(
                at,
                "deleteReplication",
                "is not a JSON object (expected {\"enabled\": true|false})",
            ));
        }
    };
    Ok(Rule {
        destinations,
        prefixes,
        delete_replication,
    })
}

fn string_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    rule: usize,
    path: &str,
    key: &str,
) -> Result<&'a str, ConfigError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ConfigError::new(
            Some(rule),
            format!("{path}.{key}"),
            "is not a string",
        )),
        None => Err(ConfigError::new(
            Some(rule),
            format!("{path}.{key}"),
            "is missing",
        )),
    }
}

fn parse_destination(rule: usize, j: usize, d: &Value) -> Result<Destination, ConfigError> {
    let path = format!("destinations[{j}]");
    let obj = d
        .as_object()
        .ok_or_else(|| ConfigError::new(Some(rule), path.clone(), "is not a JSON object"))?;
    let region = string_field(obj, rule, &path, "region")?;
    let region = Region::parse(region)
        .map_err(|e| ConfigError::new(Some(rule), format!("{path}.region"), bad(region, e)))?;
    let account = string_field(obj, rule, &path, "registryId")?;
    let account = AccountId::parse(account)
        .map_err(|e| ConfigError::new(Some(rule), format!("{path}.registryId"), bad(account, e)))?;
    Ok(Destination { account, region })
}

fn parse_filter(rule: usize, j: usize, f: &Value) -> Result<String, ConfigError> {
    let path = format!("repositoryFilters[{j}]");
    let obj = f
        .as_object()
        .ok_or_else(|| ConfigError::new(Some(rule), path.clone(), "is not a JSON object"))?;
    let kind = string_field(obj, rule, &path, "filterType")?;
    if kind != "PREFIX_MATCH" {
        return Err(ConfigError::new(
            Some(rule),
            format!("{path}.filterType"),
            format!(
                "is {}; PREFIX_MATCH is the only filter type ECR has",
                quoted(kind)
            ),
        ));
    }
    let filter = string_field(obj, rule, &path, "filter")?;
    check_filter(filter)
        .map_err(|e| ConfigError::new(Some(rule), format!("{path}.filter"), bad(filter, e)))?;
    Ok(filter.to_owned())
}

fn bad(value: &str, e: InvalidValue) -> String {
    format!("{} {e}", quoted(value))
}

const FILTER_PATTERN: &str = "^(?:[a-z0-9]+(?:[._-][a-z0-9]*)*/)*[a-z0-9]*(?:[._-][a-z0-9]*)*$";

/// ECR's filter pattern, 2-256 characters. Looser than a repository name: a filter may stop
/// anywhere, even after a separator (`team-`), but every component before a `/` starts with a
/// letter or digit.
fn check_filter(filter: &str) -> Result<(), InvalidValue> {
    let len = filter.chars().count();
    if len < 2 {
        return Err(InvalidValue::TooShort { len, min: 2 });
    }
    if len > 256 {
        return Err(InvalidValue::TooLong { len, max: 256 });
    }
    let allowed =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
    let (leading, last) = match filter.rsplit_once('/') {
        Some((leading, last)) => (Some(leading), last),
        None => (None, filter),
    };
    let leading_ok = leading.is_none_or(|l| {
        l.split('/').all(|c| {
            c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) && c.bytes().all(allowed)
        })
    });
    if leading_ok && last.bytes().all(allowed) {
        Ok(())
    } else {
        Err(InvalidValue::Pattern {
            pattern: FILTER_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn region(s: &str) -> Region {
        Region::parse(s).unwrap()
    }
    fn account(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }
    fn repo(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }
    fn dest(a: &str, r: &str) -> Destination {
        Destination {
            account: account(a),
            region: region(r),
        }
    }
    fn config(rules: Value) -> ReplicationConfig {
        ReplicationConfig::from_json(
            &json!({"registryId": "111111111111", "replicationConfiguration": {"rules": rules}}),
            region("us-west-2"),
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_prefix_filter_is_a_plain_string_prefix_so_prod_covers_production() {
        let c = config(json!([{
            "destinations": [{"region": "us-east-1", "registryId": "111111111111"}],
            "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]
        }]));
        assert_eq!(
            c.expected_destinations(&repo("production/web"))
                .destinations,
            vec![dest("111111111111", "us-east-1")]
        );
        assert_eq!(c.expected_destinations(&repo("prod")).destinations.len(), 1);
        assert!(
            c.expected_destinations(&repo("pro"))
                .destinations
                .is_empty()
        );
        assert!(
            c.expected_destinations(&repo("team/prod"))
                .destinations
                .is_empty()
        );
    }

    #[test]
    fn a_rule_without_filters_covers_every_repository() {
        let c = config(
            json!([{"destinations": [{"region": "eu-west-1", "registryId": "222222222222"}]}]),
        );
        assert_eq!(
            c.expected_destinations(&repo("anything/at-all"))
                .destinations,
            vec![dest("222222222222", "eu-west-1")]
        );
        let empty_list = config(
            json!([{"destinations": [{"region": "eu-west-1", "registryId": "222222222222"}], "repositoryFilters": []}]),
        );
        assert_eq!(
            empty_list
                .expected_destinations(&repo("x1"))
                .destinations
                .len(),
            1
        );
    }

    #[test]
    fn destinations_of_every_matching_rule_are_united_without_duplicates() {
        let c = config(json!([
            {"destinations": [{"region": "us-east-1", "registryId": "111111111111"},
                              {"region": "eu-west-1", "registryId": "222222222222"}],
             "repositoryFilters": [{"filter": "team-a", "filterType": "PREFIX_MATCH"}]},
            {"destinations": [{"region": "us-east-1", "registryId": "111111111111"},
                              {"region": "ap-south-1", "registryId": "111111111111"}]},
            {"destinations": [{"region": "sa-east-1", "registryId": "111111111111"}],
             "repositoryFilters": [{"filter": "team-b", "filterType": "PREFIX_MATCH"}]}
        ]));
        let got = c.expected_destinations(&repo("team-a/api")).destinations;
        assert_eq!(
            got,
            vec![
                dest("111111111111", "us-east-1"),
                dest("222222222222", "eu-west-1"),
                dest("111111111111", "ap-south-1")
            ]
        );
    }

    #[test]
    fn the_push_regions_own_registry_is_dropped_with_a_warning() {
        let c = config(json!([{"destinations": [
            {"region": "us-west-2", "registryId": "111111111111"},
            {"region": "us-west-2", "registryId": "333333333333"}
        ]}]));
        let e = c.expected_destinations(&repo("app"));
        assert!(e.dropped_self);
        // Same Region, another account, is a real destination.
        assert_eq!(e.destinations, vec![dest("333333333333", "us-west-2")]);
        assert!(c.warnings.iter().any(|w| w.contains("own Region")));
    }

    #[test]
    fn no_rules_means_no_expected_destinations() {
        let c = ReplicationConfig::from_json(
            &json!({"registryId": "111111111111"}),
            region("us-west-2"),
            None,
        )
        .unwrap();
        assert!(
            c.expected_destinations(&repo("app"))
                .destinations
                .is_empty()
        );
    }

    #[test]
    fn a_bare_rules_document_needs_the_registry_id() {
        let doc = json!({"rules": [{"destinations": [{"region": "us-east-1", "registryId": "111111111111"}]}]});
        let err = ReplicationConfig::from_json(&doc, region("us-west-2"), None).unwrap_err();
        assert_eq!(err.field, "registryId");
        let c =
            ReplicationConfig::from_json(&doc, region("us-west-2"), Some(account("444444444444")))
                .unwrap();
        assert_eq!(c.registry, account("444444444444"));
    }

    fn refusal(rules: Value) -> ConfigError {
        ReplicationConfig::from_json(
            &json!({"rules": rules}),
            region("us-west-2"),
            Some(account("111111111111")),
        )
        .unwrap_err()
    }

    #[test]
    fn invalid_documents_name_the_rule_and_the_field() {
        let e = refusal(
            json!([{"destinations": [{"region": "us-east-1", "registryId": "111111111111"}]},
                               {"destinations": [{"region": "US_EAST", "registryId": "111111111111"}]}]),
        );
        assert_eq!(
            (e.rule, e.field.as_str()),
            (Some(1), "destinations[0].region")
        );
        let e = refusal(json!([{"destinations": [{"region": "us-east-1", "registryId": "12"}]}]));
        assert_eq!(e.field, "destinations[0].registryId");
        let e = refusal(
            json!([{"destinations": [{"region": "us-east-1", "registryId": "111111111111"}],
                                "repositoryFilters": [{"filter": "app", "filterType": "WILDCARD"}]}]),
        );
        assert_eq!(e.field, "repositoryFilters[0].filterType");
        let e = refusal(
            json!([{"destinations": [{"region": "us-east-1", "registryId": "111111111111"}],
                                "repositoryFilters": [{"filter": "App", "filterType": "PREFIX_MATCH"}]}]),
        );
        assert_eq!(e.field, "repositoryFilters[0].filter");
        assert!(
            e.to_string()
                .starts_with("rule 0: repositoryFilters[0].filter: \"App\""),
            "{e}"
        );
        let e = refusal(json!([{"repositoryFilters": []}]));
        assert_eq!(e.field, "destinations");
        let e = refusal(json!([{"destinations": []}]));
        assert_eq!(e.field, "destinations");
    }

    #[test]
    fn ecr_limits_are_enforced_26_destinations_and_101_filters_are_refused() {
        let dests: Vec<Value> = (0..26)
            .map(|i| json!({"region": format!("region-{i}"), "registryId": "111111111111"}))
            .collect();
        let e = refusal(json!([{"destinations": dests[..13]}, {"destinations": dests[13..]}]));
        assert!(e.problem.contains("26 unique destinations"), "{e}");
        // 25 unique, some repeated across rules, is fine.
        let ok = json!([{"destinations": dests[..25]}, {"destinations": dests[..5]}]);
        assert!(
            ReplicationConfig::from_json(
                &json!({"rules": ok}),
                region("us-west-2"),
                Some(account("111111111111"))
            )
            .is_ok()
        );

        let filters: Vec<Value> = (0..101)
            .map(|i| json!({"filter": format!("f{i}"), "filterType": "PREFIX_MATCH"}))
            .collect();
        let e = refusal(json!([{"destinations": dests[..1], "repositoryFilters": filters}]));
        assert_eq!((e.rule, e.field.as_str()), (Some(0), "repositoryFilters"));
    }

    #[test]
    fn more_than_ten_rules_warn_but_load() {
        let rules: Vec<Value> =
            (0..12).map(|_| json!({"destinations": [{"region": "us-east-1", "registryId": "111111111111"}]})).collect();
        let c = ReplicationConfig::from_json(
            &json!({"rules": rules}),
            region("us-west-2"),
            Some(account("111111111111")),
        )
        .unwrap();
        assert!(c.warnings.iter().any(|w| w.starts_with("12 rules")));
    }

    /// us-west-2's rules: every repository to us-east-1 and eu-west-1 without delete
    /// replication; `prod` to ap-southeast-2 and us-east-1 with it.
    fn with_delete_replication() -> ReplicationConfig {
        config(json!([
            {"destinations": [{"region": "us-east-1", "registryId": "111111111111"},
                              {"region": "eu-west-1", "registryId": "222222222222"}]},
            {"destinations": [{"region": "ap-southeast-2", "registryId": "111111111111"},
                              {"region": "us-east-1", "registryId": "111111111111"}],
             "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
             "deleteReplication": {"enabled": true}}
        ]))
    }

    #[test]
    fn a_delete_is_expected_in_the_destinations_of_the_covering_rules_with_delete_replication_only()
    {
        let c = with_delete_replication();
        assert_eq!(
            c.delete_destinations(&repo("prod/web")).destinations,
            vec![
                dest("111111111111", "ap-southeast-2"),
                dest("111111111111", "us-east-1")
            ],
            "us-east-1 is also named by a rule without it: the rule with it still promises it"
        );
        assert!(
            c.delete_destinations(&repo("team/api"))
                .destinations
                .is_empty(),
            "only the rule without delete replication covers team/api"
        );
        assert_eq!(
            c.expected_destinations(&repo("prod/web"))
                .destinations
                .len(),
            3,
            "copies are owed by every covering rule, whatever its delete replication"
        );
    }

    #[test]
    fn delete_replication_is_off_when_absent_or_disabled_and_checked_when_given() {
        let rules = |extra: Value| {
            let mut rule =
                json!({"destinations": [{"region": "us-east-1", "registryId": "111111111111"}]});
            if !extra.is_null() {
                rule["deleteReplication"] = extra;
            }
            ReplicationConfig::from_json(
                &json!({"rules": [rule]}),
                region("us-west-2"),
                Some(account("111111111111")),
            )
        };
        assert!(!rules(Value::Null).unwrap().rules[0].delete_replication);
        assert!(!rules(json!({"enabled": false})).unwrap().rules[0].delete_replication);
        assert!(rules(json!({"enabled": true})).unwrap().rules[0].delete_replication);
        for (bad, field) in [
            (json!({"enabled": "yes"}), "deleteReplication.enabled"),
            (json!({}), "deleteReplication.enabled"),
            (json!(true), "deleteReplication"),
        ] {
            let e = rules(bad.clone()).unwrap_err();
            assert_eq!((e.rule, e.field.as_str()), (Some(0), field), "{bad}");
        }
    }

    #[test]
    fn filters_follow_ecr_pattern() {
        for ok in ["ab", "team-", "team/", "team/a", "a.b/c_", "prod"] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "Ab",
            "/team",
            "team//x",
            "-x/y",
            "a b",
            &"a".repeat(257),
        ] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }
}
