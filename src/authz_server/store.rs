//! Server-side state with a lifetime: pending authorization requests, login
//! sessions, authorization codes, refresh tokens, their families, and the ids of
//! revoked access tokens.
//!
//! Every table is a [`Table`]: bounded by count (a full table evicts its oldest
//! entry) and by age (expired entries are pruned). Every expiry is a unix second
//! from the injected clock, so tests move time with a `ManualClock`.
//!
//! Redeeming a code or a refresh token is two steps under one lock: `check_*`
//! validates everything and changes nothing (except that a replay revokes its
//! family), then `complete_*` consumes it once the access token is signed. A
//! refused request therefore consumes nothing.

use super::oauth::{ErrorCode, OAuthError, grant_scope, random_token, secrets_equal};
use super::table::Table;

/// How long the login and consent pages stay valid for one `/authorize` request.
pub(crate) const PENDING_LIFETIME_SECS: u64 = 600;
/// How long a login session lasts.
pub(crate) const SESSION_LIFETIME_SECS: u64 = 3600;
/// Authorization codes are short-lived (RFC 6749 §4.1.2 recommends at most 10 min).
pub(crate) const CODE_LIFETIME_SECS: u64 = 60;
/// How long a revoked access token's id is remembered past its `exp`: the
/// largest clock-skew leeway a resource server plausibly allows.
pub(crate) const REVOKED_RETENTION_SECS: u64 = 300;
/// Default bound on each table.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;
/// At most this many live access-token ids are tracked per family for revocation.
const ACCESS_TOKENS_PER_FAMILY: usize = 1_000;

/// What a token will say: who, for which client, which scope, for which audiences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) subject: String,
    pub(crate) scope: Vec<String>,
    /// Never empty; the token's `aud` (one string, or an array of several).
    pub(crate) audiences: Vec<String>,
    /// The DPoP key a public client's refresh tokens are bound to (RFC 9449 §5.8).
    pub(crate) dpop_jkt: Option<String>,
    /// How and when the user signed in (`None` for the client-credentials
    /// grant): the token's `acr` and `auth_time`, kept across refreshes.
    pub(crate) authentication: Option<Authentication>,
}

/// One user login: its authentication context class and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authentication {
    /// `pwd` (password) or `mfa` (password and one-time code).
    pub(crate) acr: String,
    /// The unix second of the login, from the server's clock.
    pub(crate) auth_time: u64,
}

impl Grant {
    /// This grant narrowed to `scope` and `resources` (RFC 6749 §6, RFC 8707
    /// §2.2): absent means all of it, and nothing outside it is ever added.
    pub(crate) fn narrowed(
        &self,
        scope: Option<Vec<String>>,
        resources: &[String],
    ) -> Result<Grant, OAuthError> {
        let scope = grant_scope(scope, &self.scope)?;
        if resources.iter().any(|r| !self.audiences.contains(r)) {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "resource is not part of the authorization",
            ));
        }
        let audiences = if resources.is_empty() {
            self.audiences.clone()
        } else {
            resources.to_vec()
        };
        Ok(Grant {
            scope,
            audiences,
            ..self.clone()
        })
    }
}

/// An access token just signed, to be remembered for revocation.
#[derive(Debug, Clone)]
pub(crate) struct IssuedAccess {
    pub(crate) jti: String,
    pub(crate) expires_at: u64,
}

/// An `/authorize` request waiting for login and consent.
#[derive(Debug, Clone)]
pub(crate) struct PendingAuthorization {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: Vec<String>,
    pub(crate) state: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) audiences: Vec<String>,
    /// The session that may consent, once someone has logged in.
    pub(crate) session: Option<String>,
    /// `acr_values` (OIDC Core §3.1.2.1, RFC 9470): the acceptable login classes.
    pub(crate) acr_values: Vec<String>,
    /// `max_age`: the oldest login, in seconds, that may be reused.
    pub(crate) max_age: Option<u64>,
}

impl PendingAuthorization {
    /// Whether a login satisfies this request's `acr_values` and `max_age`.
    pub(crate) fn accepts(&self, login: &Authentication, now: u64) -> bool {
        let acr = self.acr_values.is_empty() || self.acr_values.contains(&login.acr);
        // max_age=0 asks for a login now, like prompt=login (OIDC Core §3.1.2.1).
        let fresh = self
            .max_age
            .is_none_or(|max| max > 0 && now.saturating_sub(login.auth_time) <= max);
        acr && fresh
    }

    /// Whether the login must include the second factor.
    pub(crate) fn wants_mfa(&self) -> bool {
        let has = |v: &str| self.acr_values.iter().any(|a| a == v);
        has("mfa") && !has("pwd")
    }
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) login: Authentication,
}

#[derive(Debug)]
struct IssuedCode {
    grant: Grant,
    redirect_uri: String,
    code_challenge: String,
    /// The refresh-token family the first redemption started.
    redeemed_into: Option<u64>,
}

#[derive(Debug)]
struct RefreshRecord {
    family: u64,
    spent: bool,
}

#[derive(Debug)]
struct Family {
    grant: Grant,
    revoked: bool,
    /// Live access tokens issued in this family, oldest first.
    access: Vec<IssuedAccess>,
}

/// A code exchange [`Store::check_code`] accepted.
#[derive(Debug)]
pub(crate) struct CheckedCode {
    /// What the new access token says (possibly narrowed by `resource`).
    pub(crate) grant: Grant,
    /// Everything the user authorized: what the refresh-token family keeps.
    authorized: Grant,
}

impl CheckedCode {
    /// Binds the refresh-token family to this DPoP key (RFC 9449 §5.8).
    pub(crate) fn bind_dpop(&mut self, jkt: &str) {
        self.grant.dpop_jkt = Some(jkt.to_owned());
        self.authorized.dpop_jkt = Some(jkt.to_owned());
    }
}

/// A refresh request [`Store::check_refresh`] accepted.
#[derive(Debug)]
pub(crate) struct CheckedRefresh {
    /// What the new access token says (possibly narrowed).
    pub(crate) grant: Grant,
    family: u64,
}

/// How many entries each table holds, from
/// [`stored_state`](super::AuthorizationServerHandle::stored_state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoredState {
    /// `/authorize` requests waiting for login or consent.
    pub pending_authorizations: usize,
    /// Signed-in browsers.
    pub sessions: usize,
    /// Authorization codes not yet expired (redeemed ones included, for replay detection).
    pub codes: usize,
    /// Refresh tokens not yet expired (spent ones included, for reuse detection).
    pub refresh_tokens: usize,
    /// Refresh-token families with a live refresh or access token.
    pub families: usize,
    /// Ids of revoked access tokens not yet expired.
    pub revoked_access_tokens: usize,
    /// Entries pushed out of any table because it was full, since start.
    pub evicted: u64,
}

/// All of it, behind one mutex held only for map operations (and the signature
/// of the access token a redemption issues).
#[derive(Debug)]
pub(crate) struct Store {
    pending: Table<String, PendingAuthorization>,
    sessions: Table<String, Session>,
    codes: Table<String, IssuedCode>,
    refresh_tokens: Table<String, RefreshRecord>,
    families: Table<u64, Family>,
    revoked_jtis: Table<String, ()>,
    next_family: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Store {
    /// A store whose every table holds at most `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            pending: Table::new(capacity),
            sessions: Table::new(capacity),
            codes: Table::new(capacity),
            refresh_tokens: Table::new(capacity),
            families: Table::new(capacity),
            revoked_jtis: Table::new(capacity),
            next_family: 0,
        }
    }

    /// Stores `pending` and returns its id.
    pub(crate) fn add_pending(&mut self, pending: PendingAuthorization, now: u64) -> String {
        let id = random_token();
        let expires_at = now.saturating_add(PENDING_LIFETIME_SECS);
        self.pending.insert(id.clone(), pending, expires_at, now);
        id
    }

    pub(crate) fn pending_mut(&mut self, id: &str, now: u64) -> Option<&mut PendingAuthorization> {
        self.pending.get_mut(id, now)
    }

    /// Removes and returns the pending request: consent is answered once.
    pub(crate) fn take_pending(&mut self, id: &str, now: u64) -> Option<PendingAuthorization> {
        self.pending.take(id, now)
    }

    /// Starts a session for `user`; returns its id.
    pub(crate) fn new_session(&mut self, user: &str, acr: &str, now: u64) -> String {
        let id = random_token();
        let session = Session {
            user: user.to_owned(),
            login: Authentication {
                acr: acr.to_owned(),
                auth_time: now,
            },
        };
        let expires_at = now.saturating_add(SESSION_LIFETIME_SECS);
        self.sessions.insert(id.clone(), session, expires_at, now);
        id
    }

    pub(crate) fn session(&self, id: &str, now: u64) -> Option<&Session> {
        self.sessions.get(id, now)
    }

    /// Issues a single-use code bound to the grant, redirect URI and PKCE challenge.
    pub(crate) fn issue_code(
        &mut self,
        grant: Grant,
        redirect_uri: String,
        code_challenge: String,
        now: u64,
    ) -> String {
        let code = random_token();
        let issued = IssuedCode {
            grant,
            redirect_uri,
            code_challenge,
            redeemed_into: None,
        };
        let expires_at = now.saturating_add(CODE_LIFETIME_SECS);
        self.codes.insert(code.clone(), issued, expires_at, now);
        code
    }

    /// Checks every part of a code exchange without consuming the code.
    ///
    /// `verifier_challenge` is the S256 challenge computed from the client's
    /// `code_verifier`; `resources` may narrow the audiences. A code that was
    /// already redeemed revokes everything its redemption produced (RFC 6749
    /// §4.1.2): it has evidently leaked.
    pub(crate) fn check_code(
        &mut self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier_challenge: &str,
        resources: &[String],
        now: u64,
    ) -> Result<CheckedCode, OAuthError> {
        let unknown = || OAuthError::invalid_grant("unknown, expired or already used code");
        let issued = self.codes.get(code, now).ok_or_else(unknown)?;
        if issued.grant.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "code was issued to another client",
            ));
        }
        if let Some(family) = issued.redeemed_into {
            self.revoke_family(family, now);
            return Err(unknown());
        }
        if issued.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !secrets_equal(&issued.code_challenge, verifier_challenge) {
            return Err(OAuthError::invalid_grant("code_verifier does not match"));
        }
        Ok(CheckedCode {
            grant: issued.grant.narrowed(None, resources)?,
            authorized: issued.grant.clone(),
        })
    }

    /// Consumes a code [`check_code`](Self::check_code) accepted: starts its
    /// refresh-token family with the whole authorized grant, and returns the
    /// family's first refresh token.
    pub(crate) fn complete_code(
        &mut self,
        code: &str,
        checked: CheckedCode,
        access: IssuedAccess,
        refresh_expires_at: u64,
        now: u64,
    ) -> String {
        self.next_family += 1;
        let family = self.next_family;
        let record = Family {
            grant: checked.authorized,
            revoked: false,
            access: Vec::new(),
        };
        self.families
            .insert(family, record, refresh_expires_at, now);
        if let Some(issued) = self.codes.get_mut(code, now) {
            issued.redeemed_into = Some(family);
        }
        self.issue_refresh_token(family, access, refresh_expires_at, now)
    }

    fn revoke_family(&mut self, family: u64, now: u64) {
        let Some(family) = self.families.get_mut(&family, now) else {
            return;
        };
        family.revoked = true;
        for access in &family.access {
            let until = access.expires_at.saturating_add(REVOKED_RETENTION_SECS);
            self.revoked_jtis.insert(access.jti.clone(), (), until, now);
        }
    }

    /// Checks a refresh request without spending the token.
    ///
    /// Refresh tokens rotate on every use; presenting a spent one means two
    /// parties hold the family, so the whole family is revoked (OAuth 2.1 §4.3.1).
    /// `requested_scope` and `resources` may narrow the new access token, never
    /// widen it; the family keeps its original grant for later refreshes.
    pub(crate) fn check_refresh(
        &mut self,
        token: &str,
        client_id: &str,
        requested_scope: Option<Vec<String>>,
        resources: &[String],
        now: u64,
    ) -> Result<CheckedRefresh, OAuthError> {
        let invalid = || OAuthError::invalid_grant("unknown, expired or revoked refresh token");
        let record = self.refresh_tokens.get(token, now).ok_or_else(invalid)?;
        let (family_id, spent) = (record.family, record.spent);
        let family = self.families.get(&family_id, now).ok_or_else(invalid)?;
        if family.revoked {
            return Err(invalid());
        }
        if family.grant.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "refresh token was issued to another client",
            ));
        }
        if spent {
            self.revoke_family(family_id, now);
            return Err(invalid());
        }
        Ok(CheckedRefresh {
            grant: family.grant.narrowed(requested_scope, resources)?,
            family: family_id,
        })
    }

    /// Spends a refresh token [`check_refresh`](Self::check_refresh) accepted
    /// and returns its successor.
    pub(crate) fn complete_refresh(
        &mut self,
        token: &str,
        checked: CheckedRefresh,
        access: IssuedAccess,
        refresh_expires_at: u64,
        now: u64,
    ) -> String {
        if let Some(record) = self.refresh_tokens.get_mut(token, now) {
            record.spent = true;
        }
        self.issue_refresh_token(checked.family, access, refresh_expires_at, now)
    }

    /// A new refresh token in `family`, and records the access token issued with it.
    fn issue_refresh_token(
        &mut self,
        family: u64,
        access: IssuedAccess,
        expires_at: u64,
        now: u64,
    ) -> String {
        let access_until = access.expires_at.saturating_add(REVOKED_RETENTION_SECS);
        if let Some(record) = self.families.get_mut(&family, now) {
            record.access.retain(|a| now < a.expires_at);
            if record.access.len() >= ACCESS_TOKENS_PER_FAMILY {
                record.access.remove(0);
            }
            record.access.push(access);
        }
        self.families
            .extend_to(&family, expires_at.max(access_until));
        let token = random_token();
        let record = RefreshRecord {
            family,
            spent: false,
        };
        self.refresh_tokens
            .insert(token.clone(), record, expires_at, now);
        token
    }

    pub(crate) fn is_revoked(&self, jti: &str, now: u64) -> bool {
        self.revoked_jtis.get(jti, now).is_some()
    }

    pub(crate) fn stored_state(&self, now: u64) -> StoredState {
        StoredState {
            pending_authorizations: self.pending.len(now),
            sessions: self.sessions.len(now),
            codes: self.codes.len(now),
            refresh_tokens: self.refresh_tokens.len(now),
            families: self.families.len(now),
            revoked_access_tokens: self.revoked_jtis.len(now),
            evicted: self.pending.evicted()
                + self.sessions.evicted()
                + self.codes.evicted()
                + self.refresh_tokens.evicted()
                + self.families.evicted()
                + self.revoked_jtis.evicted(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            client_id: "spa".into(),
            subject: "alice".into(),
            scope: vec!["a".into()],
            audiences: vec!["api".into(), "other".into()],
            dpop_jkt: None,
            authentication: None,
        }
    }

    fn store_with_code() -> (Store, String) {
        let mut store = Store::default();
        let code = store.issue_code(grant(), "http://cb".into(), "challenge".into(), 1000);
        (store, code)
    }

    fn access(jti: &str) -> IssuedAccess {
        IssuedAccess {
            jti: jti.into(),
            expires_at: 1300,
        }
    }

    fn check(store: &mut Store, code: &str, now: u64) -> Result<CheckedCode, OAuthError> {
        store.check_code(code, "spa", "http://cb", "challenge", &[], now)
    }

    /// A store whose code was redeemed once, with the family's first refresh token.
    fn store_with_refresh_token() -> (Store, String, String) {
        let (mut store, code) = store_with_code();
        let checked = check(&mut store, &code, 1000).expect("valid");
        let refresh = store.complete_code(&code, checked, access("jti-1"), 5000, 1000);
        (store, code, refresh)
    }

    fn refresh(store: &mut Store, token: &str, now: u64) -> Result<String, OAuthError> {
        let checked = store.check_refresh(token, "spa", None, &[], now)?;
        Ok(store.complete_refresh(token, checked, access("jti-next"), 5000, now))
    }

    #[test]
    fn code_is_bound_to_client_redirect_and_challenge() {
        let (mut store, code) = store_with_code();
        for (client, redirect, challenge) in [
            ("other", "http://cb", "challenge"),
            ("spa", "http://cb/x", "challenge"),
            ("spa", "http://cb", "wrong"),
        ] {
            let result = store.check_code(&code, client, redirect, challenge, &[], 1000);
            assert_eq!(result.err().map(|e| e.code), Some(ErrorCode::InvalidGrant));
        }
        assert!(check(&mut store, &code, 1000).is_ok());
    }

    #[test]
    fn checking_a_code_consumes_nothing() {
        let (mut store, code) = store_with_code();
        let resources = ["elsewhere".to_owned()];
        let refused = store.check_code(&code, "spa", "http://cb", "challenge", &resources, 1000);
        assert_eq!(
            refused.err().map(|e| e.code),
            Some(ErrorCode::InvalidTarget)
        );
        assert!(check(&mut store, &code, 1000).is_ok());
        assert!(
            check(&mut store, &code, 1000).is_ok(),
            "only complete_code consumes"
        );
    }

    #[test]
    fn resources_narrow_the_audiences_of_a_code() {
        let (mut store, code) = store_with_code();
        let resources = ["other".to_owned()];
        let checked = store.check_code(&code, "spa", "http://cb", "challenge", &resources, 1000);
        assert_eq!(checked.expect("narrows").grant.audiences, vec!["other"]);
        let all = check(&mut store, &code, 1000).expect("valid");
        assert_eq!(all.grant.audiences, vec!["api", "other"]);
    }

    #[test]
    fn code_expires_after_sixty_seconds() {
        let (mut store, code) = store_with_code();
        assert!(check(&mut store, &code, 1060).is_err());
    }

    #[test]
    fn second_code_redemption_revokes_the_first_family() {
        let (mut store, code, refresh_token) = store_with_refresh_token();
        assert!(check(&mut store, &code, 1001).is_err());
        assert!(store.is_revoked("jti-1", 1001));
        assert!(refresh(&mut store, &refresh_token, 1002).is_err());
    }

    #[test]
    fn spent_refresh_token_reuse_revokes_the_family() {
        let (mut store, _, r1) = store_with_refresh_token();
        let r2 = refresh(&mut store, &r1, 1001).expect("rotates");
        assert!(refresh(&mut store, &r1, 1002).is_err());
        assert!(
            refresh(&mut store, &r2, 1003).is_err(),
            "newest revoked too"
        );
        assert!(store.is_revoked("jti-next", 1003));
    }

    #[test]
    fn refresh_may_narrow_but_not_widen_scope_or_audience() {
        let (mut store, _, r1) = store_with_refresh_token();
        let wider = Some(vec!["a".to_owned(), "b".to_owned()]);
        assert!(store.check_refresh(&r1, "spa", wider, &[], 1001).is_err());
        let elsewhere = ["elsewhere".to_owned()];
        assert!(
            store
                .check_refresh(&r1, "spa", None, &elsewhere, 1001)
                .is_err()
        );
        let narrowed = store.check_refresh(&r1, "spa", Some(vec![]), &[], 1001);
        assert!(narrowed.expect("narrows").grant.scope.is_empty());
        assert!(
            refresh(&mut store, &r1, 1001).is_ok(),
            "refusals spent nothing"
        );
    }

    #[test]
    fn refresh_token_expires() {
        let (mut store, _, r1) = store_with_refresh_token();
        assert!(refresh(&mut store, &r1, 5000).is_err());
    }

    #[test]
    fn revoked_ids_are_forgotten_after_the_token_expires() {
        let (mut store, code, _) = store_with_refresh_token();
        assert!(check(&mut store, &code, 1001).is_err());
        assert!(store.is_revoked("jti-1", 1300 + REVOKED_RETENTION_SECS - 1));
        assert!(!store.is_revoked("jti-1", 1300 + REVOKED_RETENTION_SECS));
    }

    #[test]
    fn families_end_when_their_tokens_expire() {
        let (store, _, _) = store_with_refresh_token();
        assert_eq!(store.stored_state(4999).families, 1);
        assert_eq!(store.stored_state(5000).families, 0);
    }

    #[test]
    fn every_table_is_bounded() {
        let mut store = Store::new(2);
        for _ in 0..5 {
            let pending = PendingAuthorization {
                client_id: "spa".into(),
                redirect_uri: "http://cb".into(),
                scope: vec![],
                state: None,
                code_challenge: "c".into(),
                audiences: vec!["api".into()],
                session: None,
                acr_values: vec![],
                max_age: None,
            };
            store.add_pending(pending, 1000);
            store.new_session("alice", "pwd", 1000);
            let code = store.issue_code(grant(), "http://cb".into(), "challenge".into(), 1000);
            let checked = check(&mut store, &code, 1000).expect("valid");
            let r = store.complete_code(&code, checked, access("j"), 5000, 1000);
            assert!(check(&mut store, &code, 1000).is_err(), "replay revokes");
            assert!(refresh(&mut store, &r, 1000).is_err());
        }
        let state = store.stored_state(1000);
        assert_eq!(
            (state.pending_authorizations, state.sessions, state.codes),
            (2, 2, 2)
        );
        assert_eq!((state.refresh_tokens, state.families), (2, 2));
        assert!(state.revoked_access_tokens <= 2);
        assert!(state.evicted >= 15, "{state:?}");
    }
}
