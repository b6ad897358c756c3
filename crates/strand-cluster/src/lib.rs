//! Strand past one machine, on NATS JetStream rather than a cluster protocol of its own.
//!
//! - A **receiver** ([`publish::Publisher`]) decodes and validates as the single binary
//!   does, splits each batch by trace id into [`ClusterConfig::partitions`] partitions and
//!   publishes every part to the JetStream stream (`<name>.<p>.spans`, `<name>.<p>.logs`);
//!   the client hears success only once JetStream acknowledged every part.
//! - An **ingester** ([`ingester::Ingester`]) holds leases on a share of the partitions in
//!   a JetStream key-value bucket (they move when ingesters join or leave), pulls each
//!   owned partition through a durable consumer into its own store (WAL, head, tail
//!   sampling with every span of a trace in one place, blocks), acknowledges a message only
//!   once the store made it durable, and answers queriers on
//!   `POST /api/v1/cluster/read` ([`wire`]).
//! - A **querier** ([`querier::RemoteStore`]) finds the live ingesters in the registry
//!   bucket, asks each and merges: the same query APIs and UI as the single binary.
//!
//! Subjects, buckets and the stream are named from [`ClusterConfig::name`], so two
//! clusters can share a NATS server. `docs/cluster.md` describes the design and how to run
//! it.

pub mod bus;
pub mod compact;
pub mod handoff;
pub mod ingester;
pub mod objects;
pub mod publish;
pub mod querier;
pub mod wire;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strand_core::TraceId;
use strand_core::units::HumanDuration;

/// What this process does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The single binary: receives, stores and answers queries on one data directory.
    #[default]
    All,
    /// Stateless: receives and publishes to JetStream.
    Receiver,
    /// Owns partitions: consumes them into its store and answers queriers.
    Ingester,
    /// Stateless: answers the query APIs by asking the ingesters.
    Querier,
}

impl Role {
    /// The name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Receiver => "receiver",
            Role::Ingester => "ingester",
            Role::Querier => "querier",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Role::All),
            "receiver" => Ok(Role::Receiver),
            "ingester" => Ok(Role::Ingester),
            "querier" => Ok(Role::Querier),
            other => Err(format!("unknown role `{other}`: one of all, receiver, ingester, querier")),
        }
    }
}

/// The `cluster:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `all` (the single binary, the default), `receiver`, `ingester` or `querier`.
    pub role: Role,
    /// The NATS server (or servers, comma-separated) with JetStream.
    pub nats_url: String,
    /// Names the stream (upper-cased), its subjects and the key-value buckets.
    pub name: String,
    /// Partitions spans are split into by trace id. Every process of a cluster must agree;
    /// the first to start records it and the others refuse to start with another.
    pub partitions: u32,
    /// Copies JetStream keeps of the stream and buckets (at most the NATS cluster's size).
    pub replicas: usize,
    /// The longest JetStream keeps a message no ingester consumed.
    pub max_age: HumanDuration,
    /// Ingester: its id, unique in the cluster and stable across restarts (its data
    /// directory is its own). Empty: the host name.
    pub ingester_id: String,
    /// Ingester: the URL queriers reach its query port at. Empty: `http://` and the bound
    /// query address.
    pub advertise_url: String,
    /// How long an ingester's registration and partition leases live without renewal
    /// (renewed every third of it); a killed ingester's partitions move after it.
    pub lease_ttl: HumanDuration,
    /// Ingester: how long JetStream waits for a message's acknowledgement before
    /// delivering it again (after a crash, what was in hand comes back after this).
    pub ack_wait: HumanDuration,
    /// Receiver: how long to wait for JetStream to acknowledge a batch before telling the
    /// client to retry (503 / `UNAVAILABLE`).
    pub publish_timeout: HumanDuration,
    /// Querier: how long to wait for an ingester's answer.
    pub read_timeout: HumanDuration,
    /// Querier: the bearer token sent to ingesters (a token with the `read` scope, and the
    /// tenants, when the ingesters require tokens).
    pub token: Option<String>,
    /// Where blocks go: S3-compatible object storage (see [`objects`]).
    pub objects: objects::ObjectsConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            role: Role::All,
            nats_url: "nats://127.0.0.1:4222".into(),
            name: "strand".into(),
            partitions: 16,
            replicas: 1,
            max_age: HumanDuration(Duration::from_secs(24 * 3600)),
            ingester_id: String::new(),
            advertise_url: String::new(),
            lease_ttl: HumanDuration(Duration::from_secs(10)),
            ack_wait: HumanDuration(Duration::from_secs(30)),
            publish_timeout: HumanDuration(Duration::from_secs(10)),
            read_timeout: HumanDuration(Duration::from_secs(30)),
            token: None,
            objects: objects::ObjectsConfig::default(),
        }
    }
}

impl ClusterConfig {
    /// Problems with the section, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.role == Role::All {
            return errs;
        }
        if self.partitions == 0 || self.partitions > 1024 {
            errs.push(format!("cluster.partitions must be 1 to 1024, not {}", self.partitions));
        }
        if self.name.is_empty()
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            errs.push(format!(
                "cluster.name `{}` must be lowercase letters, digits and `_` (it names NATS subjects and buckets)",
                self.name
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            errs.push(format!("cluster.replicas must be 1 to 5, not {}", self.replicas));
        }
        if self.lease_ttl.0 < Duration::from_secs(1) {
            errs.push(format!("cluster.lease_ttl must be at least 1s, not {}", self.lease_ttl));
        }
        for (key, d) in [
            ("publish_timeout", self.publish_timeout),
            ("read_timeout", self.read_timeout),
            ("max_age", self.max_age),
        ] {
            if d.0.is_zero() {
                errs.push(format!("cluster.{key} must be greater than zero"));
            }
        }
        let url = &self.advertise_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            errs.push(format!(
                "cluster.advertise_url `{}` must be an http:// or https:// URL",
                self.advertise_url
            ));
        }
        if self.ack_wait.0 < Duration::from_secs(1) {
            errs.push(format!("cluster.ack_wait must be at least 1s, not {}", self.ack_wait));
        }
        if self.nats_url.trim().is_empty() {
            errs.push("cluster.nats_url is empty: the roles meet through NATS JetStream".into());
        }
        errs.extend(self.objects.validate());
        if !self.ingester_id.is_empty()
            && !self.ingester_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errs.push(format!(
                "cluster.ingester_id `{}` must be letters, digits, `-` and `_` (it is a key-value key)",
                self.ingester_id
            ));
        }
        errs
    }

    /// The JetStream stream's name.
    pub fn stream_name(&self) -> String {
        self.name.to_ascii_uppercase()
    }

    /// The subject a part of partition `p` is published on.
    pub fn subject(&self, kind: Kind, p: u32) -> String {
        format!("{}.{p}.{}", self.name, kind.as_str())
    }
}

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Spans.
    Spans,
    /// Log records.
    Logs,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Spans => "spans",
            Kind::Logs => "logs",
        }
    }
}

/// The partition of a trace: the same in every process and every release, since receivers
/// of different versions may run side by side. Both halves of the id go through SplitMix64's
/// finaliser, so ids whose high half is a timestamp, or whose halves repeat, spread as well.
pub fn partition_of(trace_id: &TraceId, partitions: u32) -> u32 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let bytes = trace_id.0;
    let hi = u64::from_be_bytes(bytes[..8].try_into().expect("16-byte id"));
    let lo = u64::from_be_bytes(bytes[8..].try_into().expect("16-byte id"));
    (mix(mix(hi) ^ lo) % u64::from(partitions.max(1))) as u32
}

/// The tenant a message belongs to (absent: the single tenant).
pub const TENANT_HEADER: &str = "Strand-Tenant";
/// Header of a message an ingester published back to the stream when it gave the
/// partition up (the undecided traces of its tail sampling): ingesters' analysers and RED
/// metrics saw those spans already and skip it.
pub const HANDED_BACK_HEADER: &str = "Strand-Handed-Back";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: a change here would split traces between receivers of two releases.
        let id = TraceId([0x11; 16]);
        assert_eq!(partition_of(&id, 16), 15);
        assert_eq!(partition_of(&"5b8efff798038103d269b633813fc60c".parse().expect("id"), 16), 9);
        assert_eq!(partition_of(&id, 1), 0);
        let mut counts = [0u32; 8];
        for i in 0u64..8000 {
            // Ids whose high half is a timestamp and low half a counter, the worst case.
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&(1_700_000_000 + i / 100).to_be_bytes());
            b[8..].copy_from_slice(&i.to_be_bytes());
            counts[partition_of(&TraceId(b), 8) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven partitions: {counts:?}");
        }
    }

    #[test]
    fn a_cluster_config_is_checked() {
        let ok = ClusterConfig { role: Role::Receiver, ..ClusterConfig::default() };
        assert!(ok.validate().is_empty());
        let bad = ClusterConfig {
            role: Role::Ingester,
            partitions: 0,
            name: "Strand.x".into(),
            ingester_id: "a b".into(),
            ..ClusterConfig::default()
        };
        let errs = bad.validate();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("cluster.partitions")));
        assert!(errs.iter().any(|e| e.contains("cluster.name")));
        assert!(errs.iter().any(|e| e.contains("cluster.ingester_id")));
        assert_eq!("querier".parse::<Role>(), Ok(Role::Querier));
        assert!("leader".parse::<Role>().is_err());
    }
}
