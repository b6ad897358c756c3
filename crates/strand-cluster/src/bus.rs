//! The connection to NATS JetStream every role opens at start: the stream of spans and log
//! records, and the key-value buckets of the cluster's state.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, kv, stream};

use crate::{ClusterConfig, Kind};

/// A role's NATS connection, the stream and the buckets.
pub struct Bus {
    /// The configuration it was opened with.
    pub cfg: ClusterConfig,
    /// The connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: jetstream::Context,
    /// The stream every receiver publishes to.
    pub stream: stream::Stream,
    /// Registered ingesters: key = ingester id, value = JSON [`Member`]; entries expire
    /// after `lease_ttl` unless renewed.
    pub members: kv::Store,
    /// Partition leases: key `p<N>` = the owning ingester's id; expire like members.
    pub leases: kv::Store,
}

/// The durable consumer of partition `p`.
pub(crate) fn partition_consumer(cfg: &ClusterConfig, p: u32) -> String {
    format!("{}-p{p}", cfg.name)
}

/// Its settings: explicit acknowledgements, redelivery after `ack_wait`.
pub(crate) fn partition_consumer_config(
    cfg: &ClusterConfig,
    p: u32,
) -> async_nats::jetstream::consumer::pull::Config {
    use async_nats::jetstream::consumer::AckPolicy;
    async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(partition_consumer(cfg, p)),
        description: Some(format!("strand: partition {p}")),
        filter_subject: format!("{}.{p}.*", cfg.name),
        ack_policy: AckPolicy::Explicit,
        ack_wait: cfg.ack_wait.0,
        max_ack_pending: 1024,
        ..Default::default()
    }
}

/// The key of partition `p`'s lease.
pub(crate) fn lease_key(p: u32) -> String {
    format!("p{p}")
}

/// An ingester as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// Where queriers reach its query port.
    pub url: String,
    /// When it started (Unix nanoseconds): its RED history begins then.
    #[serde(default)]
    pub started_unix_nano: u64,
}

impl Bus {
    /// Connects (retrying for up to `wait`, so a cluster can start in any order), makes
    /// sure the stream and buckets exist, and checks that the cluster's recorded partition
    /// count is this process's.
    pub async fn open(cfg: &ClusterConfig, wait: Duration) -> anyhow::Result<Self> {
        let deadline = tokio::time::Instant::now() + wait;
        let client = loop {
            let opts = async_nats::ConnectOptions::new()
                .name(format!("strand {}", cfg.role.as_str()))
                .connection_timeout(Duration::from_secs(5));
            match opts.connect(cfg.nats_url.as_str()).await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(url = %cfg.nats_url, error = %e, "NATS not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("connecting to NATS at {}", cfg.nats_url));
                }
            }
        };
        let mut js = jetstream::new(client.clone());
        // Publishes, acknowledgements and key-value calls wait this long (the client's
        // default is 5 s).
        js.set_timeout(cfg.publish_timeout.0);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: cfg.stream_name(),
                description: Some("strand: spans and log records by trace-id partition".into()),
                // `<name>.<partition>.spans|logs`: a partition's consumer filters on
                // `<name>.<partition>.*`, which servers before 2.10 accept only as a subset
                // of one of the stream's subjects.
                subjects: vec![format!("{}.*.*", cfg.name)],
                // A message goes once to its partition's consumer, and is seen by every
                // ingester's chain analyser; it is deleted once its partition's consumer
                // acknowledged it (the analysers' consumers acknowledge nothing).
                retention: stream::RetentionPolicy::Interest,
                storage: stream::StorageType::File,
                num_replicas: cfg.replicas,
                max_age: cfg.max_age.0,
                // A full stream refuses new messages: receivers answer 503 and clients
                // retry; nothing already accepted is dropped.
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the JetStream stream {}", cfg.stream_name()))?;
        let retention = stream.cached_info().config.retention;
        if retention != stream::RetentionPolicy::Interest {
            bail!(
                "the JetStream stream {} keeps messages by {retention:?}, not by interest (made by an older strand): \
                 stop every strand of the cluster, delete the stream once ingesters have consumed it, and start again",
                cfg.stream_name()
            );
        }
        let bucket = |suffix: &str, max_age: Duration, description: &str| BucketConfig {
            name: format!("{}_{suffix}", cfg.name),
            description: description.to_owned(),
            max_age,
            replicas: cfg.replicas,
        };
        // Every partition's durable consumer exists before anything is published: a stream
        // kept by interest drops a message nobody is interested in yet.
        for p in 0..cfg.partitions {
            stream
                .get_or_create_consumer(&partition_consumer(cfg, p), partition_consumer_config(cfg, p))
                .await
                .with_context(|| format!("creating the consumer of partition {p}"))?;
        }
        let ttl = cfg.lease_ttl.0;
        let members = open_bucket(&js, bucket("members", ttl, "strand: live ingesters")).await?;
        let leases = open_bucket(&js, bucket("leases", ttl, "strand: partition owners")).await?;
        let meta = open_bucket(&js, bucket("meta", Duration::ZERO, "strand: cluster settings")).await?;
        let mine = cfg.partitions.to_string();
        match meta.create("partitions", mine.clone().into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let recorded =
                    meta.get("partitions").await.context("reading the cluster's partition count")?;
                let recorded = recorded.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                if recorded != mine {
                    bail!(
                        "cluster `{}` has {recorded} partitions but this process is configured with {mine} \
                         (cluster.partitions): every process of a cluster must agree",
                        cfg.name
                    );
                }
            }
            Err(e) => return Err(e).context("recording the cluster's partition count"),
        }
        Ok(Self { cfg: cfg.clone(), client, js, stream, members, leases })
    }

    /// The subject a part of partition `p` goes to.
    pub fn subject(&self, kind: Kind, p: u32) -> String {
        self.cfg.subject(kind, p)
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The registered ingesters, by id.
    pub async fn members(&self) -> anyhow::Result<Vec<Member>> {
        use futures_util::TryStreamExt as _;
        let keys: Vec<String> = self.members.keys().await?.try_collect().await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // A key can expire between listing and reading.
            if let Some(value) = self.members.get(&key).await? {
                match serde_json::from_slice::<Member>(&value) {
                    Ok(m) => out.push(m),
                    Err(e) => tracing::warn!(key, error = %e, "unreadable ingester registration skipped"),
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// A key-value bucket as Strand uses them: the latest value per key only.
struct BucketConfig {
    name: String,
    description: String,
    max_age: Duration,
    replicas: usize,
}

/// Opens a key-value bucket, creating its stream first when missing. The stream is made
/// directly, with the settings a bucket has, because the client's own bucket creation asks
/// for account details in a shape NATS servers before 2.10 (Debian's 2.9) do not answer.
async fn open_bucket(js: &jetstream::Context, cfg: BucketConfig) -> anyhow::Result<kv::Store> {
    let name = cfg.name.clone();
    let max_age = cfg.max_age;
    let stream = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            description: Some(cfg.description),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age: cfg.max_age,
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the key-value bucket {name}"))?;
    // The first process made it: every process must renew on the same clock.
    let found = stream.cached_info().config.max_age;
    if found != max_age {
        bail!(
            "the key-value bucket {name} keeps entries {found:?} but this process expects {max_age:?}: \
             every process of a cluster needs the same cluster.lease_ttl"
        );
    }
    js.get_key_value(&name).await.with_context(|| format!("opening the key-value bucket {name}"))
}
