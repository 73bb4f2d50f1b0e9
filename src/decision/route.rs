//! Routes: a path prefix matched segment by segment, optional methods, and what the
//! token must carry. The first route matching path and method wins; when routes
//! cover the path but none the method, it is a 405 with their methods in `Allow`;
//! no route covering the path is a 404.

use std::sync::Arc;

use http::Method;

use super::config::{ConfigError, RouteConfig};
use super::path::{match_key, normalize_path};
use crate::Require;
use crate::scope::is_scope_token;

type ClaimRule = fn(&str, &[serde_json::Value]) -> Require;

fn claim_in(path: &str, values: &[serde_json::Value]) -> Require {
    Require::claim_in(path, values.iter().cloned())
}

fn claim_contains_all(path: &str, values: &[serde_json::Value]) -> Require {
    Require::claim_contains_all(path, values.iter().cloned())
}

fn claim_contains_any(path: &str, values: &[serde_json::Value]) -> Require {
    Require::claim_contains_any(path, values.iter().cloned())
}

/// A route ready to match.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The `path` as configured: what logs name the route by.
    pub name: Arc<str>,
    /// Its place in `[[route]]`.
    pub index: usize,
    prefix: String,
    methods: Option<Vec<Method>>,
    pub public: bool,
    /// `dpop_bound = true`: only DPoP-bound tokens with their proof.
    pub dpop_bound: bool,
    /// Every requirement must hold, in order: DPoP binding, scopes, then claims,
    /// then step-up.
    pub requirements: Option<Require>,
}

impl Route {
    /// Checks `[[route]]` number `index`.
    pub(super) fn from_config(index: usize, c: &RouteConfig) -> Result<Route, ConfigError> {
        let key = |k: &str| format!("route[{index}].{k}");
        let prefix = match normalize_path(&c.path) {
            Ok(p) if p == c.path || p == format!("{}/", c.path.trim_end_matches('/')) => {
                // Stored without a trailing slash, so `/orders/` matches `/orders/7`.
                // Matched, like request paths, on the decoded form (`path::match_key`).
                let trimmed = p.trim_end_matches('/');
                match_key(if trimmed.is_empty() { "/" } else { trimmed })
            }
            Ok(p) => {
                return Err(ConfigError::at(
                    key("path"),
                    format!("{:?} is not in normal form; write {p:?}", c.path),
                ));
            }
            Err(e) => return Err(ConfigError::at(key("path"), e.to_string())),
        };
        let methods = match &c.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(ConfigError::at(
                    key("methods"),
                    "empty list: omit the key to allow every method",
                ));
            }
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, m)| {
                        Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                            ConfigError::at(
                                format!("route[{index}].methods[{i}]"),
                                format!("{m:?} is not an HTTP method"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let demands = !(c.scopes_all.is_empty()
            && c.scopes_any.is_empty()
            && c.claims.is_empty()
            && c.claims_contain_all.is_empty()
            && c.claims_contain_any.is_empty()
            && c.acr_values.is_empty()
            && c.max_age.is_none()
            && !c.dpop_bound);
        if c.public && demands {
            return Err(ConfigError::at(
                key("public"),
                "a public route cannot require scopes, claims, step-up or DPoP",
            ));
        }
        let mut requirements: Vec<Require> = Vec::new();
        if c.dpop_bound {
            // First: a token that is not DPoP-bound is an authentication failure
            // (401), whatever it would have been allowed to do.
            requirements.push(Require::dpop_bound());
        }
        for (name, scopes, any) in [
            ("scopes_all", &c.scopes_all, false),
            ("scopes_any", &c.scopes_any, true),
        ] {
            if scopes.is_empty() {
                continue;
            }
            if let Some(i) = scopes.iter().position(|s| !is_scope_token(s)) {
                return Err(ConfigError::at(
                    format!("route[{index}].{name}[{i}]"),
                    format!("{:?} is not a valid OAuth scope token", scopes[i]),
                ));
            }
            // Checked above, so these constructors cannot panic.
            requirements.push(if any {
                Require::any(scopes.iter().cloned())
            } else {
                Require::all(scopes.iter().cloned())
            });
        }
        for (name, rules, make) in [
            ("claims", &c.claims, claim_in as ClaimRule),
            (
                "claims_contain_all",
                &c.claims_contain_all,
                claim_contains_all,
            ),
            (
                "claims_contain_any",
                &c.claims_contain_any,
                claim_contains_any,
            ),
        ] {
            for (path, values) in rules {
                if path.is_empty() || values.is_empty() {
                    return Err(ConfigError::at(
                        format!("route[{index}].{name}.{path}"),
                        "needs a claim name and at least one value",
                    ));
                }
                requirements.push(make(path, values));
            }
        }
        if !c.acr_values.is_empty() {
            let acr = Require::try_acr_in(c.acr_values.iter().cloned())
                .map_err(|e| ConfigError::at(key("acr_values"), e.to_string()))?;
            requirements.push(acr);
        }
        if let Some(max_age) = c.max_age {
            requirements.push(Require::max_age(std::time::Duration::from_secs(max_age)));
        }
        Ok(Route {
            name: Arc::from(c.path.as_str()),
            index,
            prefix,
            methods,
            public: c.public,
            dpop_bound: c.dpop_bound,
            requirements: requirements.into_iter().reduce(Require::and),
        })
    }

    /// Whether this route applies to `method` on `path`, the
    /// [`match_key`] of a normalised path.
    pub(super) fn matches(&self, method: &Method, path: &str) -> bool {
        self.matches_path(path) && self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// Whether this route's prefix covers the normalised `path`, whatever the method.
    fn matches_path(&self, path: &str) -> bool {
        self.prefix == "/"
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// What the routes make of a request.
#[derive(Debug)]
pub(crate) enum Selected<'a> {
    /// The first route matching path and method.
    Route(&'a Route),
    /// Routes cover the path, none the method: the methods they allow, each once,
    /// in the order they first appear in the configuration (for `Allow`).
    MethodNotAllowed(Vec<Method>),
    /// No route covers the path.
    NotFound,
}

/// Chooses the route for `method` on `path` (the [`match_key`] of the normalised
/// path): first match wins.
pub(crate) fn select<'a>(routes: &'a [Route], method: &Method, path: &str) -> Selected<'a> {
    if let Some(route) = routes.iter().find(|r| r.matches(method, path)) {
        return Selected::Route(route);
    }
    // A route covering the path with every method would have matched above, and a
    // method list is never empty: the path is covered exactly when `allowed` is not.
    let mut allowed: Vec<Method> = Vec::new();
    for route in routes.iter().filter(|r| r.matches_path(path)) {
        for m in route.methods.iter().flatten() {
            if !allowed.contains(m) {
                allowed.push(m.clone());
            }
        }
    }
    if allowed.is_empty() {
        Selected::NotFound
    } else {
        Selected::MethodNotAllowed(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, methods: Option<&[&str]>) -> Result<Route, ConfigError> {
        Route::from_config(
            0,
            &RouteConfig {
                path: path.to_owned(),
                methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
                public: false,
                scopes_all: vec![],
                scopes_any: vec![],
                claims: Default::default(),
                claims_contain_all: Default::default(),
                claims_contain_any: Default::default(),
                acr_values: vec![],
                max_age: None,
                dpop_bound: false,
                upstream: None,
            },
        )
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let r = route("/orders", None).expect("route");
        assert!(r.matches(&Method::GET, "/orders"));
        assert!(r.matches(&Method::GET, "/orders/"));
        assert!(r.matches(&Method::GET, "/orders/7"));
        assert!(!r.matches(&Method::GET, "/ordersX"));
        assert!(!r.matches(&Method::GET, "/"));
        let slash = route("/orders/", None).expect("route");
        assert!(slash.matches(&Method::GET, "/orders/7"));
        let root = route("/", None).expect("route");
        assert!(root.matches(&Method::GET, "/anything/at/all"));
    }

    #[test]
    fn methods_restrict_a_route() {
        let r = route("/orders", Some(&["post", "PUT"])).expect("route");
        assert!(r.matches(&Method::POST, "/orders"));
        assert!(r.matches(&Method::PUT, "/orders/1"));
        assert!(!r.matches(&Method::GET, "/orders"));
    }

    fn chosen<'a>(selected: Selected<'a>) -> Option<&'a Route> {
        match selected {
            Selected::Route(r) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn select_takes_the_first_route_matching_path_and_method() {
        let routes = [
            route("/orders", Some(&["POST"])).expect("route"),
            route("/orders", None).expect("route"),
        ];
        let post = chosen(select(&routes, &Method::POST, "/orders/1")).expect("post");
        assert_eq!(post.methods.as_deref(), Some(&[Method::POST][..]));
        let get = chosen(select(&routes, &Method::GET, "/orders")).expect("get");
        assert!(
            get.methods.is_none(),
            "falls through to the any-method route"
        );
    }

    #[test]
    fn select_tells_a_method_mismatch_from_an_unknown_path() {
        let routes = [
            route("/orders", Some(&["POST", "put"])).expect("route"),
            route("/orders/archive", Some(&["GET"])).expect("route"),
            route("/orders", Some(&["DELETE", "POST"])).expect("route"),
            route("/health", Some(&["GET"])).expect("route"),
        ];
        match select(&routes, &Method::GET, "/orders/7") {
            Selected::MethodNotAllowed(allowed) => assert_eq!(
                allowed,
                [Method::POST, Method::PUT, Method::DELETE],
                "deduplicated, in configuration order"
            ),
            other => panic!("{other:?}"),
        }
        match select(&routes, &Method::PATCH, "/orders/archive/1") {
            Selected::MethodNotAllowed(allowed) => assert_eq!(
                allowed,
                [Method::POST, Method::PUT, Method::GET, Method::DELETE]
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            select(&routes, &Method::GET, "/ordersX"),
            Selected::NotFound
        ));
        assert!(matches!(
            select(&routes, &Method::POST, "/"),
            Selected::NotFound
        ));
        assert!(chosen(select(&routes, &Method::GET, "/orders/archive")).is_some());
    }

    #[test]
    fn refuses_paths_not_in_normal_form() {
        assert_eq!(
            route("/a/../b", None).expect_err("dot dot").key(),
            Some("route[0].path")
        );
        assert!(route("orders", None).is_err());
        assert!(route("/a//b", None).is_err());
        assert!(route("/a b", Some(&["G E T"])).is_err());
    }
}
