//! One resolution of a config for every binary: the file (or the defaults), then what
//! it names outside itself in the environment (the redaction hash key, Kafka
//! credentials). Both `toolgate` and `toolgate-sink` load through [`Config::resolve`],
//! so a key the operator set reaches every component that hashes or connects; two
//! loaders once let the sink ship unkeyed hashes the engine never matched.

use std::ffi::OsString;
use std::path::Path;

use super::{Config, ConfigError};

impl Config {
    /// The config at `path` (the built-in defaults without one), validated, with every
    /// environment variable it names read in.
    pub fn resolve(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (mut config, origin) = match path {
            Some(p) => (Config::load(p)?, p.display().to_string()),
            None => (Config::default(), "<defaults>".to_string()),
        };
        config.resolve_environment(&origin, |var| std::env::var_os(var))?;
        Ok(config)
    }

    /// Reads what the config names in the environment, through `env`:
    /// `redaction.hash_key_env` into `redaction.hash_key`, and each
    /// `kafka.properties_env` entry into `kafka.properties`. A named variable that is
    /// unset or empty is an error: hashing without the key the operator asked for would
    /// silently weaken every stored hash, and a missing password fails later and
    /// further from its cause.
    pub fn resolve_environment(
        &mut self,
        origin: &str,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<(), ConfigError> {
        let read = |key: String, var: &str| match env(var) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key,
                message: format!("names the environment variable {var}, which is not set"),
            }),
        };
        if let Some(var) = &self.redaction.hash_key_env {
            let key = read("redaction.hash_key_env".into(), var)?;
            self.redaction.hash_key = Some(key.into_encoded_bytes());
        }
        for (property, var) in &self.kafka.properties_env {
            let value = read(format!("kafka.properties_env.{property}"), var)?;
            let value = value.into_string().map_err(|_| ConfigError::Invalid {
                origin: origin.to_string(),
                key: format!("kafka.properties_env.{property}"),
                message: format!("the environment variable {var} is not UTF-8"),
            })?;
            self.kafka.properties.insert(property.clone(), value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs = pairs.to_vec();
        move |var| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_hash_key_and_kafka_credentials_come_from_the_named_variables() {
        let mut config = Config::from_toml(
            "[redaction]\nmode = \"hash\"\nhash_key_env = \"K\"\n\
             [kafka.properties_env]\n\"sasl.password\" = \"P\"\n",
            "t",
        )
        .expect("config");
        config
            .resolve_environment("t", env(&[("K", "key-1"), ("P", "pw")]))
            .expect("resolved");
        assert_eq!(config.redaction.hash_key.as_deref(), Some(&b"key-1"[..]));
        assert_eq!(config.kafka.properties["sasl.password"], "pw");
    }

    #[test]
    fn an_unset_or_empty_variable_is_refused_naming_the_key_and_the_variable() {
        for text in [
            "[redaction]\nhash_key_env = \"K\"\n",
            "[kafka.properties_env]\n\"sasl.password\" = \"K\"\n",
        ] {
            for vars in [&[][..], &[("K", "")][..]] {
                let mut config = Config::from_toml(text, "t").expect("config");
                let e = config
                    .resolve_environment("t", env(vars))
                    .expect_err("refused")
                    .to_string();
                assert!(e.contains("names the environment variable K"), "{e}");
                assert!(e.contains("_env"), "{e}");
            }
        }
    }

    #[test]
    fn a_property_set_both_inline_and_from_the_environment_is_refused() {
        let e = Config::from_toml(
            "[kafka.properties]\n\"sasl.password\" = \"x\"\n\
             [kafka.properties_env]\n\"sasl.password\" = \"P\"\n",
            "t",
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("kafka.properties_env.sasl.password"), "{e}");
    }
}
