//! The configuration tree against config.toml, the environment and its checks.

use super::*;

#[test]
fn empty_document_gives_the_documented_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.port, 8080);
    assert_eq!(config.limits.outbound_queue, 1024);
    assert_eq!(config.limits.outbound_queue_bytes, 1 << 20);
    assert_eq!(config.server.handshake_timeout_ms, 10_000);
    assert_eq!(config.heartbeat.timeout_ms, 60000);
}

#[test]
fn shipped_config_toml_parses() {
    let text = include_str!("../../config.toml");
    Config::from_toml(text).unwrap();
}

#[test]
fn unknown_key_is_named_in_the_error() {
    let err = Config::from_toml("[server]\nprot = 1\n").unwrap_err().to_string();
    assert!(err.contains("prot"), "{err}");
    let err = Config::from_toml("[sever]\nport = 1\n").unwrap_err().to_string();
    assert!(err.contains("sever"), "{err}");
}

#[test]
fn wrong_type_is_named_in_the_error() {
    let err = Config::from_toml("[server]\nport = \"x\"\n").unwrap_err().to_string();
    assert!(err.contains("port"), "{err}");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
fn string_keys_accept_numbers_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("HERALD_SERVER__NODE_ID", "123");
        jail.set_env("HERALD_AUTH__JWT_SECRET", "4567");
        jail.set_env("HERALD_SERVER__PORT", "9001");
        let config = Config::load(Path::new("absent.toml"), false).unwrap();
        assert_eq!(config.server.node_id, "123");
        assert_eq!(config.auth.jwt_secret, "4567");
        assert_eq!(config.server.port, 9001);
        jail.set_env("HERALD_SERVER__PROT", "1");
        let err = Config::load(Path::new("absent.toml"), false).unwrap_err().to_string();
        assert!(err.contains("server.prot"), "{err}");
        Ok(())
    });
}

#[test]
fn a_log_level_is_a_level_or_a_filter_of_target_level_directives() {
    for good in ["info", "INFO", "warn", "off", "trace", "info,herald::cluster=debug", "herald=debug", "warn,herald=info,"] {
        Config::from_toml(&format!("[log]\nlevel = {good:?}\n")).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["loud", "info,loud", "herald", "", " ", "info,herald=loudly", "info;debug"] {
        let err = Config::from_toml(&format!("[log]\nlevel = {bad:?}\n")).unwrap_err().to_string();
        assert!(err.contains("log.level"), "{bad}: {err}");
        assert!(err.contains("error, warn, info, debug or trace"), "{bad}: {err}");
    }
    let err = Config::from_toml("[log]\nlevel = \"loud\"\n").unwrap_err().to_string();
    assert!(err.contains("\"loud\" is not a level"), "{err}");
    assert!(err.contains("loud=trace"), "{err}");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
fn a_bad_log_level_from_the_environment_is_refused() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("HERALD_LOG__LEVEL", "loud");
        let err = Config::load(Path::new("absent.toml"), false).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.contains("loud"), "{err}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
fn lists_come_from_the_environment_as_json_arrays() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("HERALD_SERVER__ALLOWED_ORIGINS", r#"["https://a.example.com", "https://b.example.com"]"#);
        let config = Config::load(Path::new("absent.toml"), false).unwrap();
        assert_eq!(config.server.allowed_origins, ["https://a.example.com", "https://b.example.com"]);
        for bad in ["https://a.example.com", "https://a.example.com,https://b.example.com", "7"] {
            jail.set_env("HERALD_SERVER__ALLOWED_ORIGINS", bad);
            let err = Config::load(Path::new("absent.toml"), false).unwrap_err().to_string();
            assert!(err.contains("server.allowed_origins") && err.contains("JSON array"), "{bad}: {err}");
        }
        Ok(())
    });
    let err = Config::from_toml("[server]\nallowed_origins = \"https://a.example.com\"\n").unwrap_err().to_string();
    assert!(err.contains("server.allowed_origins") && err.contains("JSON array"), "{err}");
}

#[test]
fn inconsistent_values_are_rejected() {
    let err = Config::from_toml("[auth]\nrequired = true\n").unwrap_err().to_string();
    assert!(err.contains("auth.jwt_secret"), "{err}");
    let err = Config::from_toml("[heartbeat]\ninterval_ms = 10\ntimeout_ms = 5\n").unwrap_err().to_string();
    assert!(err.contains("heartbeat.timeout_ms"), "{err}");
    let err = Config::from_toml("[limits]\noutbound_queue = 0\n").unwrap_err().to_string();
    assert!(err.contains("limits.outbound_queue"), "{err}");
    let err = Config::from_toml("[limits]\noutbound_queue_bytes = 0\n").unwrap_err().to_string();
    assert!(err.contains("limits.outbound_queue_bytes"), "{err}");
    let err = Config::from_toml("[server]\nhandshake_timeout_ms = 0\n").unwrap_err().to_string();
    assert!(err.contains("server.handshake_timeout_ms"), "{err}");
    let err = Config::from_toml("[server]\nnode_id = \"a b\"\n").unwrap_err().to_string();
    assert!(err.contains("server.node_id"), "{err}");
}

#[test]
fn namespaces_take_the_defaults_an_entry_leaves_out() {
    let config = Config::from_toml(
        "[history]\nsize = 7\n\n[[namespaces]]\nprefix = \"live.\"\npresence = false\njoin_events = false\n\
         client_publish = false\nhistory_size = 0\nslow_consumer = \"latest\"\n\n[[namespaces]]\nprefix = \"chat:\"\n",
    )
    .unwrap();
    let [live, chat] = &config.namespaces[..] else { panic!("{:?}", config.namespaces) };
    assert_eq!((live.presence, live.join_events, live.client_publish), (false, false, false));
    assert_eq!((live.history_size, live.slow_consumer), (Some(0), SlowConsumer::Latest));
    assert_eq!(*chat, NamespaceConfig::new("chat:"));
    assert!(Config::from_toml("").unwrap().namespaces.is_empty());
}

#[test]
fn a_bad_namespace_is_named_by_its_entry_and_key() {
    let cases = [
        ("[[namespaces]]\nprefix = \"a\"\npresense = false\n", "namespaces[0].presense"),
        ("[[namespaces]]\nprefix = \"a\"\n[[namespaces]]\nprefix = \"b\"\nslow_consumer = \"fast\"\n", "namespaces[1].slow_consumer"),
        ("[[namespaces]]\nprefix = \"a\"\npresence = \"no\"\n", "namespaces[0].presence"),
        ("[[namespaces]]\nprefix = \"a\"\nhistory_size = -1\n", "namespaces[0].history_size"),
        ("[[namespaces]]\npresence = false\n", "prefix"),
        ("namespaces = [\"live.\"]\n", "namespaces[0]` is not a table"),
        ("namespaces = 3\n", "namespaces"),
        ("[[namespaces]]\nprefix = \"\"\n", "namespaces.prefix"),
        ("[[namespaces]]\nprefix = \"a\"\n[[namespaces]]\nprefix = \"a\"\n", "namespaces.prefix"),
        ("[[namespaces]]\nprefix = \"a\"\nhistory_size = 100001\n", "namespaces.history_size"),
        ("[[namespaces]]\nprefix = \"a\"\nhistory_ttl_ms = 0\n", "namespaces.history_ttl_ms"),
    ];
    for (text, key) in cases {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    Config::from_toml("[[namespaces]]\nprefix = \"a\"\nhistory_size = 0\nhistory_ttl_ms = 0\n").unwrap();
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
fn namespaces_come_from_the_environment_by_index() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("herald.toml", "[[namespaces]]\nprefix = \"file.\"\n")?;
        jail.set_env("HERALD_NAMESPACES__1__PREFIX", "ticker.");
        jail.set_env("HERALD_NAMESPACES__1__SLOW_CONSUMER", "latest");
        jail.set_env("HERALD_NAMESPACES__0__PREFIX", "live.");
        jail.set_env("HERALD_NAMESPACES__0__PRESENCE", "false");
        jail.set_env("HERALD_NAMESPACES__0__HISTORY_SIZE", "0");
        let config = Config::load(Path::new("herald.toml"), true).unwrap();
        let prefixes: Vec<&str> = config.namespaces.iter().map(|n| n.prefix.as_str()).collect();
        assert_eq!(prefixes, ["live.", "ticker."], "the environment's entries replace the file's");
        assert!(!config.namespaces[0].presence);
        assert_eq!(config.namespaces[0].history_size, Some(0));
        assert_eq!(config.namespaces[1].slow_consumer, SlowConsumer::Latest);
        jail.set_env("HERALD_NAMESPACES__1__PRESENCE", "maybe");
        let err = Config::load(Path::new("herald.toml"), true).unwrap_err().to_string();
        assert!(err.contains("namespaces[1].presence"), "{err}");
        jail.set_env("HERALD_NAMESPACES__1__PRESENCE", "true");
        jail.set_env("HERALD_NAMESPACES__X__PREFIX", "x");
        let err = Config::load(Path::new("herald.toml"), true).unwrap_err().to_string();
        assert!(err.contains("namespaces.x"), "{err}");
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.set_env("HERALD_NAMESPACES", r#"[{prefix = "live.", presence = false}, {prefix = "t.", slow_consumer = "drop"}]"#);
        let config = Config::load(Path::new("absent.toml"), false).unwrap();
        assert_eq!(config.namespaces.len(), 2);
        assert!(!config.namespaces[0].presence);
        assert_eq!(config.namespaces[1].slow_consumer, SlowConsumer::Drop);
        Ok(())
    });
}

#[test]
fn the_shipped_config_s_commented_namespaces_parse_and_mean_what_they_say() {
    // `key = value` on a line of its own: a commented-out setting, not prose.
    fn is_setting(line: &str) -> bool {
        line.split_once(" = ").is_some_and(|(key, _)| !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    }
    let shipped = include_str!("../../config.toml");
    let uncommented: String = shipped
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with("[[namespaces]]") || is_setting(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml(&uncommented).unwrap();
    let prefixes: Vec<&str> = config.namespaces.iter().map(|n| n.prefix.as_str()).collect();
    assert_eq!(prefixes, ["dm:", "live.", "ticker.", "notify:"]);
    let [dm, live, ticker, notify] = &config.namespaces[..] else { unreachable!() };
    assert!(dm.presence && dm.join_events && dm.client_publish);
    assert!(!live.presence && !live.join_events && !live.client_publish && live.history_size == Some(0));
    assert_eq!(ticker.slow_consumer, SlowConsumer::Latest);
    assert_eq!((notify.client_publish, notify.slow_consumer), (false, SlowConsumer::Drop));
    assert!(Config::from_toml(shipped).unwrap().namespaces.is_empty(), "none by default");
}
