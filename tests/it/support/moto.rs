//! A local moto server (a stand-in for ECR, STS, IAM and DynamoDB) for integration tests, and
//! SDK configurations pointed at it.
//!
//! The server comes from `scripts/python-tools` (run by `scripts/test`); without it the tests fail and say so rather
//! than skip, so a green run always means the adapters were exercised.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_ecr::config::retry::RetryConfig;
use aws_sdk_ecr::types::{
    ReplicationConfiguration, ReplicationDestination, ReplicationRule, RepositoryFilter,
    RepositoryFilterType,
};

/// The account moto gives any credentials it did not issue itself (ours below).
pub const ACCOUNT: &str = "123456789012";
/// The Region the tests' own SDK configuration uses.
pub const REGION: &str = "us-east-1";

/// Python imports moto, flask and boto in one to three seconds on these machines; several test
/// binaries may start servers at once on two cores.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `moto_server`, killed (by its pid) and reaped when dropped.
pub struct MotoServer {
    child: Child,
    port: u16,
    /// The server's stdout and stderr, shown when it does not come up.
    log: tempfile::NamedTempFile,
    started_in: Duration,
}

impl MotoServer {
    /// Starts a server on a free port of 127.0.0.1 and waits until it answers.
    ///
    /// # Panics
    /// When `moto_server` is not installed, or does not answer within [`START_TIMEOUT`].
    pub fn start() -> MotoServer {
        Self::start_with(None)
    }

    /// Like [`MotoServer::start`], with `account` as moto's default account (`MOTO_ACCOUNT_ID`,
    /// set on the server's process only): what STS `GetCallerIdentity` answers and where
    /// requests with the plain test credentials land. Seen with moto 5.2.5: with the variable
    /// set, requests made with assumed-role credentials no longer land in the role's account,
    /// so cross-account tests use [`MotoServer::start`].
    pub fn start_in_account(account: &str) -> MotoServer {
        Self::start_with(Some(account))
    }

    fn start_with(account: Option<&str>) -> MotoServer {
        let binary = binary();
        // The port is free when asked but another process may take it before moto binds it:
        // try again on a new port when that happens.
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(&binary, account) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!(
            "moto_server ({}) did not start; the end of its log:\n{last_log}",
            binary.display()
        );
    }

    fn try_start(binary: &PathBuf, account: Option<&str>) -> Result<MotoServer, String> {
        let began = Instant::now();
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("a temporary file for moto's log");
        let stdout = log.as_file().try_clone().expect("a handle on moto's log");
        let stderr = log.as_file().try_clone().expect("a handle on moto's log");
        let mut command = Command::new(binary);
        if let Some(account) = account {
            command.env("MOTO_ACCOUNT_ID", account);
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut server = MotoServer {
            child,
            port,
            log,
            started_in: Duration::ZERO,
        };
        while began.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited with {status}\n{}", server.log_tail()));
            }
            if server.request("GET", "/moto-api/").is_ok_and(|s| s == 200) {
                server.started_in = began.elapsed();
                eprintln!(
                    "moto_server ready on {} in {:?}",
                    server.endpoint(),
                    server.started_in
                );
                return Ok(server);
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Dropping `server` kills the process.
        Err(format!(
            "no answer on port {port} within {START_TIMEOUT:?}\n{}",
            server.log_tail()
        ))
    }

    /// Creates the auditor's DynamoDB table on this server with `scripts/create-state-table`:
    /// the table, its indexes (`open`, `history`, `due`) and its TTL exactly as template.yaml
    /// defines them. The fake
    /// credentials are set on the child process only.
    ///
    /// # Panics
    /// When `.venv` is missing (run `scripts/python-tools`), or the script fails.
    pub fn create_state_table(&self, table: &str, region: &str) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        assert!(
            python.is_file(),
            "{} not found: run scripts/python-tools (or scripts/test), which installs moto and \
             boto3 into .venv",
            python.display()
        );
        let out = Command::new(&python)
            .arg(root.join("scripts/create-state-table"))
            .args(["--endpoint-url", &self.endpoint()])
            .args(["--table-name", table, "--region", region])
            .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            )
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        assert!(
            out.status.success(),
            "scripts/create-state-table failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How long the server took to answer its first request.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Forgets every resource in every account and Region (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let status = self
            .request("POST", "/moto-api/reset")
            .expect("moto answers /moto-api/reset");
        assert_eq!(status, 200, "POST /moto-api/reset");
    }

    /// An SDK configuration for this server in [`ACCOUNT`] and [`REGION`], as a Lambda would
    /// load it, with fake static credentials. Nothing is read from or written to the process
    /// environment that these explicit settings do not override.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_with(Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "moto-test",
        ))
        .await
    }

    /// An SDK configuration whose requests land in `account`: moto puts a request made with
    /// credentials from its STS AssumeRole in the role's account. (moto checks neither that the
    /// role exists nor its trust policy.)
    pub async fn sdk_config_in_account(&self, account: &str) -> SdkConfig {
        let base = self.sdk_config().await;
        let assumed = aws_sdk_sts::Client::new(&base)
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/moto-test-setup"))
            .role_session_name("moto-test-setup")
            .send()
            .await
            .expect("moto's STS AssumeRole");
        let c = assumed
            .credentials()
            .expect("AssumeRole returns credentials");
        self.sdk_config_with(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "moto-test-assumed",
        ))
        .await
    }

    async fn sdk_config_with(&self, credentials: Credentials) -> SdkConfig {
        sdk_config_at(&self.endpoint(), credentials).await
    }

    /// One plain HTTP/1.1 request, answered with its status code.
    fn request(&self, method: &str, path: &str) -> io::Result<u16> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        // The status line is all we need: "HTTP/1.1 200 OK".
        let mut head = [0u8; 16];
        stream.read_exact(&mut head)?;
        std::str::from_utf8(&head)
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // `kill` signals this child's pid only; `wait` reaps it so no zombie outlives the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK configuration for `endpoint` (this server's, or a proxy's in front of it) in
/// [`REGION`] with `credentials`, as a Lambda would load it, with the SDK's standard retries
/// (three attempts) and a backoff short enough for tests.
pub async fn sdk_config_at(endpoint: &str, credentials: Credentials) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(credentials)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(10))
                .with_max_backoff(Duration::from_millis(50)),
        )
        .load()
        .await
}

/// `MOTO_SERVER` (set by `scripts/test`), else the one `scripts/python-tools` installs.
fn binary() -> PathBuf {
    let path = std::env::var_os("MOTO_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "moto_server not found at {}: run scripts/python-tools (or scripts/test), which \
         installs moto into .venv, or set MOTO_SERVER to a moto_server binary",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Setting up ECR in moto
// ---------------------------------------------------------------------------------------------

/// An ECR client for `config`'s endpoint and credentials, in `region`.
pub fn ecr_in(config: &SdkConfig, region: &str) -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(config)
            .region(Region::new(region.to_owned()))
            .build(),
    )
}

/// Puts `client`'s registry's replication configuration: one rule (moto keeps one only) naming
/// `destinations` (Region, account), for the repositories whose names start with one of
/// `prefixes` (all of them when there is none).
pub async fn put_replication_rule(
    client: &aws_sdk_ecr::Client,
    destinations: &[(&str, &str)],
    prefixes: &[&str],
) {
    let mut rule = ReplicationRule::builder();
    for (region, account) in destinations {
        rule = rule.destinations(
            ReplicationDestination::builder()
                .region(*region)
                .registry_id(*account)
                .build()
                .unwrap(),
        );
    }
    for prefix in prefixes {
        rule = rule.repository_filters(
            RepositoryFilter::builder()
                .filter(*prefix)
                .filter_type(RepositoryFilterType::PrefixMatch)
                .build()
                .unwrap(),
        );
    }
    client
        .put_replication_configuration()
        .replication_configuration(
            ReplicationConfiguration::builder()
                .rules(rule.build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("moto's PutReplicationConfiguration");
}

/// Puts `client`'s registry's replication configuration as the JSON `document` (`{"rules":
/// [...]}`), sent as it is. For fields the SDK does not model yet (`deleteReplication` in
/// aws-sdk-ecr 1.138.0, as in botocore 1.44.8): the request is built with one placeholder rule
/// and its body replaced before it is signed. moto stores the document and DescribeRegistry
/// returns it as it was sent.
pub async fn put_replication_document(client: &aws_sdk_ecr::Client, document: serde_json::Value) {
    let body = serde_json::json!({ "replicationConfiguration": document }).to_string();
    let placeholder = ReplicationRule::builder()
        .destinations(
            ReplicationDestination::builder()
                .region("us-east-2")
                .registry_id(ACCOUNT)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    client
        .put_replication_configuration()
        .replication_configuration(
            ReplicationConfiguration::builder()
                .rules(placeholder)
                .build()
                .unwrap(),
        )
        .customize()
        .mutate_request(move |request| {
            *request.body_mut() = aws_smithy_types::body::SdkBody::from(body.clone());
            request
                .headers_mut()
                .insert("content-length", body.len().to_string());
        })
        .send()
        .await
        .expect("moto's PutReplicationConfiguration");
}

pub async fn create_repository(client: &aws_sdk_ecr::Client, name: &str) {
    client
        .create_repository()
        .repository_name(name)
        .send()
        .await
        .expect("moto's CreateRepository");
}

/// A Docker image manifest, distinct for each `n`. moto does not hash the manifest: its digest
/// is the SHA-256 of the layer digests joined, so `n` varies the layer, and the same `n` pushed
/// to the source and to a destination has the same digest, as a real copy.
pub fn manifest(n: u32) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7",
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 32654,
            "digest": format!("sha256:{n:064x}"),
        }],
    })
    .to_string()
}

/// Pushes manifest `n` to `client`'s `repository` with `tag`; returns moto's digest. (moto
/// deletes an image whose only tag is pushed again: give each image a tag of its own.)
pub async fn put_image(
    client: &aws_sdk_ecr::Client,
    repository: &str,
    n: u32,
    tag: &str,
) -> String {
    client
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest(n))
        .image_tag(tag)
        .send()
        .await
        .expect("moto's PutImage")
        .image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .expect("PutImage returns the digest")
        .to_owned()
}
