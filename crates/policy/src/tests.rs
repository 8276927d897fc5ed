use std::path::Path;

use super::*;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mcpplus-policy-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    dir
}

fn parse_err(text: &str) -> String {
    let dir = scratch();
    Policy::parse(&dir.join("t.policy.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_full_policy_resolves() {
    let dir = scratch();
    let text = r#"
sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
env = ["PATH", "MCPPLUS_SURELY_UNSET_VARIABLE"]

[[files]]
host = "data"
guest = "/data/"
access = "read-write"

[network]
allow = ["https://*.example.com"]

[sockets]
connect = ["127.0.0.1:5432"]

[queue]
submit = true

[limits]
timeout_ms = 5000
"#;
    let policy = Policy::parse(&dir.join("t.policy.toml"), text).unwrap();
    assert_eq!(
        policy.sha256.as_deref(),
        Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
    );
    assert_eq!(policy.files.len(), 1);
    assert_eq!(policy.files[0].guest, "/data");
    assert_eq!(
        policy.files[0].host,
        std::fs::canonicalize(dir.join("data")).unwrap()
    );
    assert_eq!(policy.files[0].access, FileAccess::ReadWrite);
    assert!(policy.env[0].value.is_some());
    assert!(policy.env[1].value.is_none());
    // Values never show in debug output.
    let debug = format!("{policy:?}");
    assert!(debug.contains("PATH=<redacted>"), "{debug}");
    assert!(!debug.contains(&std::env::var("PATH").unwrap()));
    assert_eq!(policy.network[0].to_string(), "https://*.example.com");
    assert!(policy.queue.submit && !policy.queue.admin);
    assert_eq!(policy.limits.timeout_ms, Some(5000));
}

#[test]
fn workflow_grants_are_deny_by_default_and_parse() {
    let dir = scratch();
    let path = dir.join("t.policy.toml");
    let none = Policy::parse(&path, "").unwrap();
    assert_eq!(none.workflow, WorkflowGrants::default());
    let submit = Policy::parse(&path, "[workflow]\nsubmit = true\n").unwrap();
    assert!(submit.workflow.submit && !submit.workflow.admin);
    assert!(!submit.grants_nothing());
    let admin = Policy::parse(&path, "[workflow]\nadmin = true\n").unwrap();
    assert!(admin.workflow.admin && !admin.workflow.submit);
    assert!(!admin.grants_nothing());
    let err = parse_err("[workflow]\nsubmit = true\ncancel = true\n");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("unknown capability or key `cancel`"), "{err}");
}

#[test]
fn client_grants_are_deny_by_default_and_parse() {
    let dir = scratch();
    let path = dir.join("t.policy.toml");
    let none = Policy::parse(&path, "").unwrap();
    assert_eq!(none.client, ClientGrants::default());
    assert!(!none.client.any());
    let elicit = Policy::parse(&path, "[client]\nelicit = true\n").unwrap();
    assert_eq!(
        elicit.client,
        ClientGrants {
            elicit: true,
            sample: false,
            roots: false
        }
    );
    assert!(!elicit.grants_nothing());
    let all = Policy::parse(
        &path,
        "[client]\nelicit = true\nsample = true\nroots = true\n",
    )
    .unwrap();
    assert!(all.client.elicit && all.client.sample && all.client.roots);
    let off = Policy::parse(&path, "[client]\nelicit = false\n").unwrap();
    assert!(off.grants_nothing());
    // A method the table does not know is refused, with its line.
    let err = parse_err("[client]\nelicit = true\nelicitation = true\n");
    assert!(err.contains("line 3"), "{err}");
    assert!(
        err.contains("unknown capability or key `elicitation`"),
        "{err}"
    );
    let err = parse_err("[client]\nsample = \"yes\"\n");
    assert!(err.contains("line 2"), "{err}");
    // Answers from the client change between calls: caching needs a ttl.
    let err = parse_err("[client]\nelicit = true\n\n[cache]\ntools = [\"ask\"]\n");
    assert!(err.contains("client") && err.contains("ttl_s"), "{err}");
}

#[test]
fn an_empty_policy_grants_nothing() {
    let dir = scratch();
    let policy = Policy::parse(&dir.join("t.policy.toml"), "").unwrap();
    assert!(policy.grants_nothing());
    assert!(Policy::default().grants_nothing());
}

#[test]
fn errors_name_file_line_and_key() {
    let err = parse_err("[[files]]\nhost = \"data\"\nguest = \"/d\"\n\n[filez]\nx = 1\n");
    assert!(err.contains("t.policy.toml: line 5"), "{err}");
    assert!(err.contains("unknown capability or key `filez`"), "{err}");

    let err = parse_err("[[files]]\nhost = \"nope\"\nguest = \"/d\"\n");
    assert!(
        err.contains("t.policy.toml: line 2: files[0].host: directory"),
        "{err}"
    );
    assert!(
        err.contains("nope") && err.contains("create it or fix the path"),
        "{err}"
    );

    let err = parse_err("[[files]]\nhost = \"data\"\nguest = \"d\"\n");
    assert!(err.contains("line 3: files[0].guest"), "{err}");
    assert!(err.contains("must be absolute"), "{err}");

    let err = parse_err("[[files]]\nhost = \"data\"\nguest = \"/d/../etc\"\n");
    assert!(err.contains("must not contain"), "{err}");

    let err = parse_err("env = [\"OK\", \"*\"]\n");
    assert!(err.contains("line 1: env[1]"), "{err}");
    assert!(err.contains("no wildcards"), "{err}");

    let err =
        parse_err("[network]\nallow = [\n  \"https://ok.example\",\n  \"https://a.*.com\",\n]\n");
    assert!(err.contains("line 4: network.allow[1]"), "{err}");

    let err = parse_err("[sockets]\nconnect = [\"localhost:80\"]\n");
    assert!(err.contains("line 2: sockets.connect[0]"), "{err}");
    assert!(err.contains("not an IP address"), "{err}");

    let err = parse_err("sha256 = \"abc\"\n");
    assert!(
        err.contains("line 1: sha256: must be 64 hex digits"),
        "{err}"
    );

    let err = parse_err("[limits]\ntimeout_ms = 0\n");
    assert!(
        err.contains("[limits] timeout_ms must be greater than 0"),
        "{err}"
    );

    let err = parse_err("[queue]\nsubmit = \"yes\"\n");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn host_directories_that_expose_the_host_are_refused() {
    let err = parse_err("[[files]]\nhost = \"/proc\"\nguest = \"/p\"\n");
    assert!(err.contains("expose the host itself"), "{err}");
    let err = parse_err("[[files]]\nhost = \"/\"\nguest = \"/root\"\n");
    assert!(err.contains("expose the host itself"), "{err}");
}

#[test]
fn pins_and_conflicts_are_checked_per_component() {
    let dir = scratch();
    let component = dir.join("notes.wasm");
    std::fs::write(&component, b"").unwrap();
    let digest = "0".repeat(64);
    let other = "1".repeat(64);

    // No policy anywhere: nothing granted.
    let config = OperatorConfig::default();
    let policy = Policy::for_component("notes", &component, &digest, &config).unwrap();
    assert!(policy.source.is_none() && policy.grants_nothing());

    // A pin that does not match names both digests.
    std::fs::write(
        policy_path_for(&component),
        format!("sha256 = \"{other}\"\n"),
    )
    .unwrap();
    let err = Policy::for_component("notes", &component, &digest, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&digest) && err.contains(&other), "{err}");

    // The operator config's table works alone, and conflicts with a file.
    let config = OperatorConfig::parse("[policies.notes]\nenv = [\"HOME\"]\n").unwrap();
    let err = Policy::for_component("notes", &component, &digest, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("two policies"), "{err}");
    std::fs::remove_file(policy_path_for(&component)).unwrap();
    let policy = Policy::for_component("notes", &component, &digest, &config).unwrap();
    assert_eq!(policy.env[0].name, "HOME");
}

#[test]
fn guest_paths_normalize() {
    assert_eq!(normalize_guest_path("/a//b/").unwrap(), "/a/b");
    assert_eq!(normalize_guest_path("/").unwrap(), "/");
    assert!(normalize_guest_path("a").is_err());
    assert!(normalize_guest_path("/a/./b").is_err());
    assert!(Path::new("/a").is_absolute());
}

#[test]
fn a_cache_of_a_component_that_reaches_the_outside_world_needs_a_ttl() {
    let dir = scratch();
    let path = dir.join("t.policy.toml");
    let pure = Policy::parse(&path, "[cache]\ntools = [\"word_count\"]\n").unwrap();
    assert_eq!(pure.cache.ttl_for("word_count"), Some(None));
    assert_eq!(pure.cache.ttl_for("slugify"), None);
    let err = parse_err(
        "[network]\nallow = [\"https://api.example.com\"]\n\n[cache]\ntools = [\"fetch\"]\n",
    );
    assert!(
        err.contains("cache") && err.contains("network") && err.contains("ttl_s"),
        "{err}"
    );
    let err = parse_err("[queue]\nsubmit = true\n\n[cache]\ntools = [\"t\"]\n");
    assert!(err.contains("queue"), "{err}");
    let timed = Policy::parse(
        &path,
        "[network]\nallow = [\"https://api.example.com\"]\n\n[cache]\ntools = [\"fetch\"]\nttl_s = 60\n",
    )
    .unwrap();
    assert_eq!(timed.cache.ttl_for("fetch"), Some(Some(60)));
    assert!(
        parse_err("[cache]\ntools = [\"t\"]\nttl_s = 0\n").contains("ttl_s must be at least 1")
    );
}

#[test]
fn the_queue_backend_is_one_config_line_and_bad_combinations_say_what_to_fix() {
    use crate::config::queue::QueueBackend;
    let sqlite = OperatorConfig::parse("[queue]\nworkers = 2\n").unwrap();
    assert_eq!(sqlite.queue.backend, QueueBackend::Sqlite);
    assert_eq!(sqlite.queue.database_url().unwrap(), None);

    let pg = OperatorConfig::parse(
        "[queue]\nbackend = \"postgres\"\nurl = \"postgres://app:s3cret@127.0.0.1:5432/q\"\nschema = \"team_a\"\n",
    )
    .unwrap();
    assert_eq!(pg.queue.backend, QueueBackend::Postgres);
    assert_eq!(
        pg.queue.database_url().unwrap().as_deref(),
        Some("postgres://app:s3cret@127.0.0.1:5432/q")
    );
    let shown = format!("{:?}", pg.queue);
    assert!(
        !shown.contains("s3cret") && shown.contains("app:***@"),
        "{shown}"
    );

    let dir = std::env::temp_dir().join(format!("mcpplus-url-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("url");
    std::fs::write(&file, "postgres://app@127.0.0.1/q\n").unwrap();
    let from_file = OperatorConfig::parse(&format!(
        "[queue]\nbackend = \"postgres\"\nurl_file = \"{}\"\n",
        file.display()
    ))
    .unwrap();
    assert_eq!(
        from_file.queue.database_url().unwrap().as_deref(),
        Some("postgres://app@127.0.0.1/q")
    );
    std::fs::remove_dir_all(&dir).unwrap();

    for (text, says) in [
        ("[queue]\nbackend = \"postgres\"\n", "needs url"),
        (
            "[queue]\nbackend = \"postgres\"\nurl = \"postgres://a@127.0.0.1/q\"\nurl_file = \"/x\"\n",
            "keep one",
        ),
        (
            "[queue]\nurl = \"postgres://a@127.0.0.1/q\"\n",
            "backend = \"postgres\"",
        ),
        (
            "[queue]\nbackend = \"postgres\"\nurl = \"postgres://a@127.0.0.1/q\"\nschema = \"Bad-Name\"\n",
            "schema must be",
        ),
        ("[queue]\nbackend = \"mysql\"\n", "unknown variant"),
    ] {
        let err = OperatorConfig::parse(text).unwrap_err();
        assert!(err.contains(says), "{text}: {err}");
    }
}
