//! The deployment files in `deploy/` hold settings every role of the same release accepts:
//! each strand container's environment is loaded as `strand serve` would load it, and the
//! cluster's processes agree on what they must share.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

/// Loads a container's configuration from its environment, as the image runs it (the
/// Dockerfile sets the data directory and listens on all interfaces).
fn load(what: &str, env: Vec<(String, String)>) -> strand_server::Config {
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).expect("Dockerfile");
    let mut all = env;
    for line in dockerfile.lines().filter_map(|l| l.strip_prefix("ENV ")) {
        let (k, v) = line.split_once('=').expect("ENV KEY=VALUE");
        all.push((k.to_owned(), v.to_owned()));
    }
    let sources = strand_server::config::Sources { env: all, ..Default::default() };
    strand_server::config::load(&sources).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("YAML")
}

/// What the processes of one cluster must agree on, and the ingesters' ids.
#[derive(Default)]
struct Cluster {
    shared: BTreeSet<String>,
    roles: Vec<strand_cluster::Role>,
    ingester_ids: Vec<String>,
    /// The bucket of ingesters and queriers.
    buckets: BTreeSet<String>,
}

impl Cluster {
    fn add(&mut self, what: &str, cfg: &strand_server::Config) {
        let c = &cfg.cluster;
        self.shared.insert(format!("{} {} {} {}", c.nats_url, c.name, c.partitions, c.lease_ttl));
        self.roles.push(c.role);
        if matches!(c.role, strand_cluster::Role::Ingester | strand_cluster::Role::Querier) {
            assert!(c.objects.enabled(), "{what}: blocks go to object storage");
            self.buckets.insert(format!("{} {}", c.objects.url, c.objects.endpoint));
        }
        if c.role == strand_cluster::Role::Ingester {
            assert!(!c.ingester_id.is_empty(), "{what}: an ingester needs a stable id");
            assert!(c.advertise_url.starts_with("http"), "{what}: queriers must reach it");
            self.ingester_ids.push(c.ingester_id.clone());
        }
    }

    fn check(self, what: &str) {
        assert_eq!(self.shared.len(), 1, "{what}: processes disagree: {:?}", self.shared);
        assert_eq!(
            self.buckets.len(),
            1,
            "{what}: ingesters and queriers disagree on the bucket: {:?}",
            self.buckets
        );
        for role in
            [strand_cluster::Role::Receiver, strand_cluster::Role::Ingester, strand_cluster::Role::Querier]
        {
            assert!(self.roles.contains(&role), "{what}: no {role:?}");
        }
        let unique: BTreeSet<_> = self.ingester_ids.iter().collect();
        assert_eq!(unique.len(), self.ingester_ids.len(), "{what}: ingester ids repeat");
    }
}

#[test]
fn the_compose_file_configures_every_role() {
    let text =
        std::fs::read_to_string(common::repo().join("deploy/docker-compose.yml")).expect("compose file");
    let compose = yaml(&text);
    let mut cluster = Cluster::default();
    for (name, service) in compose["services"].as_object().expect("services") {
        if service["image"] != "strand:latest" {
            continue;
        }
        let env: Vec<(String, String)> = service["environment"]
            .as_object()
            .expect("environment as a map")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect();
        let cfg = load(name, env);
        if cfg.cluster.role == strand_cluster::Role::Ingester {
            assert_eq!(cfg.cluster.advertise_url, format!("http://{name}:16686"), "{name}");
            let volume = service["volumes"][0].as_str().expect("a data volume");
            assert!(volume.ends_with(":/data"), "{name} keeps its data on a volume: {volume}");
        }
        cluster.add(name, &cfg);
    }
    cluster.check("docker-compose.yml");
}

#[test]
fn the_kubernetes_manifests_configure_every_role() {
    let dir = common::repo().join("deploy/kubernetes");
    let mut cluster = Cluster::default();
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("manifests").flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("manifest");
        for doc in text.split("\n---\n").map(yaml) {
            let containers =
                doc["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
            // Every pod of the workload, as its pod name expands `$(POD_NAME)`.
            let replicas = doc["spec"]["replicas"].as_u64().unwrap_or(1);
            for c in containers.iter().filter(|c| c["image"] == "strand:latest") {
                for n in 0..replicas {
                    let what = format!("{} {} pod {n}", path.display(), doc["metadata"]["name"]);
                    let pod = format!("{}-{n}", doc["metadata"]["name"].as_str().expect("name"));
                    let env: Vec<(String, String)> = c["env"]
                        .as_array()
                        .expect("env")
                        .iter()
                        .filter_map(|e| {
                            let value = e["value"].as_str()?.replace("$(POD_NAME)", &pod);
                            Some((e["name"].as_str().expect("name").to_owned(), value))
                        })
                        .collect();
                    let cfg = load(&what, env);
                    if cfg.cluster.role == strand_cluster::Role::Ingester {
                        assert_eq!(doc["kind"], "StatefulSet", "{what}: ingesters keep their id and volume");
                        assert!(cfg.cluster.advertise_url.contains(&pod), "{what}: reached at its own name");
                    }
                    cluster.add(&what, &cfg);
                }
            }
        }
    }
    cluster.check("deploy/kubernetes");
}
