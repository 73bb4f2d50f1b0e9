//! Server-side state with a lifetime: pending authorization requests, login
//! sessions, authorization codes, and refresh-token families.
//!
//! Every expiry is a unix second computed from the injected clock by the caller,
//! so tests move time with a `ManualClock` instead of sleeping.

use std::collections::{HashMap, HashSet};

use super::oauth::{OAuthError, grant_scope, random_token, secrets_equal};

/// How long the login and consent pages stay valid for one `/authorize` request.
pub(crate) const PENDING_LIFETIME_SECS: u64 = 600;
/// How long a login session lasts.
pub(crate) const SESSION_LIFETIME_SECS: u64 = 3600;
/// Authorization codes are short-lived (RFC 6749 §4.1.2 recommends at most 10 min).
pub(crate) const CODE_LIFETIME_SECS: u64 = 60;

/// What a token will say: who, for which client, which scope, for which audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) subject: String,
    pub(crate) scope: Vec<String>,
    pub(crate) audience: String,
}

/// An `/authorize` request waiting for login and consent.
#[derive(Debug, Clone)]
pub(crate) struct PendingAuthorization {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: Vec<String>,
    pub(crate) state: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) audience: String,
    /// Ties the login form to this request.
    pub(crate) login_csrf: String,
    /// The session that may consent, once someone has logged in.
    pub(crate) session: Option<String>,
    pub(crate) expires_at: u64,
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) csrf: String,
    expires_at: u64,
}

#[derive(Debug)]
struct IssuedCode {
    grant: Grant,
    redirect_uri: String,
    code_challenge: String,
    expires_at: u64,
    /// The refresh-token family the first redemption started.
    redeemed_into: Option<u64>,
}

#[derive(Debug)]
struct RefreshRecord {
    family: u64,
    spent: bool,
    expires_at: u64,
}

#[derive(Debug)]
struct Family {
    grant: Grant,
    revoked: bool,
    access_jtis: Vec<String>,
}

/// The client-facing outcome of redeeming a code or a refresh token.
#[derive(Debug)]
pub(crate) struct Redemption {
    pub(crate) grant: Grant,
    pub(crate) family: u64,
}

/// All of it, behind one mutex held only for map operations.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pending: HashMap<String, PendingAuthorization>,
    sessions: HashMap<String, Session>,
    codes: HashMap<String, IssuedCode>,
    refresh_tokens: HashMap<String, RefreshRecord>,
    families: HashMap<u64, Family>,
    revoked_jtis: HashSet<String>,
    next_family: u64,
}

impl Store {
    /// Keeps the maps from growing without bound in long-running local use.
    fn prune(&mut self, now: u64) {
        self.pending.retain(|_, p| now < p.expires_at);
        self.sessions.retain(|_, s| now < s.expires_at);
        self.codes.retain(|_, c| now < c.expires_at);
        self.refresh_tokens.retain(|_, r| now < r.expires_at);
    }

    /// Stores `pending` and returns its id.
    pub(crate) fn add_pending(&mut self, pending: PendingAuthorization, now: u64) -> String {
        self.prune(now);
        let id = random_token();
        self.pending.insert(id.clone(), pending);
        id
    }

    pub(crate) fn pending_mut(&mut self, id: &str, now: u64) -> Option<&mut PendingAuthorization> {
        self.pending.get_mut(id).filter(|p| now < p.expires_at)
    }

    /// Removes and returns the pending request: consent is answered once.
    pub(crate) fn take_pending(&mut self, id: &str, now: u64) -> Option<PendingAuthorization> {
        self.pending.remove(id).filter(|p| now < p.expires_at)
    }

    /// Starts a session for `user`; returns its id.
    pub(crate) fn new_session(&mut self, user: &str, now: u64) -> String {
        let id = random_token();
        let session = Session {
            user: user.to_owned(),
            csrf: random_token(),
            expires_at: now.saturating_add(SESSION_LIFETIME_SECS),
        };
        self.sessions.insert(id.clone(), session);
        id
    }

    pub(crate) fn session(&self, id: &str, now: u64) -> Option<&Session> {
        self.sessions.get(id).filter(|s| now < s.expires_at)
    }

    /// Issues a single-use code bound to the grant, redirect URI and PKCE challenge.
    pub(crate) fn issue_code(
        &mut self,
        grant: Grant,
        redirect_uri: String,
        code_challenge: String,
        now: u64,
    ) -> String {
        self.prune(now);
        let code = random_token();
        let issued = IssuedCode {
            grant,
            redirect_uri,
            code_challenge,
            expires_at: now.saturating_add(CODE_LIFETIME_SECS),
            redeemed_into: None,
        };
        self.codes.insert(code.clone(), issued);
        code
    }

    /// Redeems `code` and starts a refresh-token family for it.
    ///
    /// `verifier_challenge` is the S256 challenge computed from the client's
    /// `code_verifier`. A second redemption revokes everything the first one
    /// produced (RFC 6749 §4.1.2): the code has evidently leaked.
    pub(crate) fn redeem_code(
        &mut self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier_challenge: &str,
        now: u64,
    ) -> Result<Redemption, OAuthError> {
        let unknown = || OAuthError::invalid_grant("unknown, expired or already used code");
        let issued = self.codes.get(code).ok_or_else(unknown)?;
        if now >= issued.expires_at {
            return Err(unknown());
        }
        if issued.grant.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "code was issued to another client",
            ));
        }
        if let Some(family) = issued.redeemed_into {
            self.revoke_family(family);
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
        let grant = issued.grant.clone();
        let family = self.start_family(grant.clone());
        if let Some(issued) = self.codes.get_mut(code) {
            issued.redeemed_into = Some(family);
        }
        Ok(Redemption { grant, family })
    }

    fn start_family(&mut self, grant: Grant) -> u64 {
        self.next_family += 1;
        let family = Family {
            grant,
            revoked: false,
            access_jtis: Vec::new(),
        };
        self.families.insert(self.next_family, family);
        self.next_family
    }

    fn revoke_family(&mut self, family: u64) {
        if let Some(family) = self.families.get_mut(&family) {
            family.revoked = true;
            self.revoked_jtis.extend(family.access_jtis.iter().cloned());
        }
    }

    /// Spends `token` and returns its family's grant.
    ///
    /// Refresh tokens rotate on every use; presenting a spent one means two
    /// parties hold the family, so the whole family is revoked (OAuth 2.1 §4.3.1).
    ///
    /// `requested_scope` may narrow the returned grant's scope, never widen it; the
    /// family keeps its original scope for later refreshes (RFC 6749 §6).
    pub(crate) fn spend_refresh_token(
        &mut self,
        token: &str,
        client_id: &str,
        requested_scope: Option<Vec<String>>,
        now: u64,
    ) -> Result<Redemption, OAuthError> {
        let invalid = || OAuthError::invalid_grant("unknown, expired or revoked refresh token");
        let record = self.refresh_tokens.get(token).ok_or_else(invalid)?;
        let family_id = record.family;
        let family = self.families.get(&family_id).ok_or_else(invalid)?;
        if family.revoked || now >= record.expires_at {
            return Err(invalid());
        }
        if family.grant.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "refresh token was issued to another client",
            ));
        }
        if record.spent {
            self.revoke_family(family_id);
            return Err(invalid());
        }
        // Checked before spending, so a client asking too much keeps its token.
        let scope = grant_scope(requested_scope, &family.grant.scope)?;
        let grant = Grant {
            scope,
            ..family.grant.clone()
        };
        if let Some(record) = self.refresh_tokens.get_mut(token) {
            record.spent = true;
        }
        Ok(Redemption {
            grant,
            family: family_id,
        })
    }

    /// A new refresh token in `family`, and records the access token issued with it.
    pub(crate) fn issue_refresh_token(
        &mut self,
        family: u64,
        access_jti: &str,
        expires_at: u64,
    ) -> String {
        if let Some(family) = self.families.get_mut(&family) {
            family.access_jtis.push(access_jti.to_owned());
        }
        let token = random_token();
        let record = RefreshRecord {
            family,
            spent: false,
            expires_at,
        };
        self.refresh_tokens.insert(token.clone(), record);
        token
    }

    pub(crate) fn is_revoked(&self, jti: &str) -> bool {
        self.revoked_jtis.contains(jti)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz_server::oauth::ErrorCode;

    fn store_with_code() -> (Store, String) {
        let mut store = Store::default();
        let grant = Grant {
            client_id: "spa".into(),
            subject: "alice".into(),
            scope: vec!["a".into()],
            audience: "api".into(),
        };
        let code = store.issue_code(grant, "http://cb".into(), "challenge".into(), 1000);
        (store, code)
    }

    fn redeem(store: &mut Store, code: &str, now: u64) -> Result<Redemption, OAuthError> {
        store.redeem_code(code, "spa", "http://cb", "challenge", now)
    }

    /// A store whose code was redeemed once, with the family's first refresh token.
    fn store_with_refresh_token() -> (Store, String, String) {
        let (mut store, code) = store_with_code();
        let family = redeem(&mut store, &code, 1000).expect("redeems").family;
        let refresh = store.issue_refresh_token(family, "jti-1", 5000);
        (store, code, refresh)
    }

    fn refresh(store: &mut Store, token: &str, now: u64) -> Result<Redemption, OAuthError> {
        store.spend_refresh_token(token, "spa", None, now)
    }

    #[test]
    fn code_is_bound_to_client_redirect_and_challenge() {
        let (mut store, code) = store_with_code();
        for (client, redirect, challenge) in [
            ("other", "http://cb", "challenge"),
            ("spa", "http://cb/x", "challenge"),
            ("spa", "http://cb", "wrong"),
        ] {
            let result = store.redeem_code(&code, client, redirect, challenge, 1000);
            assert_eq!(result.err().map(|e| e.code), Some(ErrorCode::InvalidGrant));
        }
        assert!(redeem(&mut store, &code, 1000).is_ok());
    }

    #[test]
    fn code_expires_after_sixty_seconds() {
        let (mut store, code) = store_with_code();
        assert!(redeem(&mut store, &code, 1060).is_err());
    }

    #[test]
    fn second_code_redemption_revokes_the_first_family() {
        let (mut store, code, refresh_token) = store_with_refresh_token();
        assert!(redeem(&mut store, &code, 1001).is_err());
        assert!(store.is_revoked("jti-1"));
        assert!(refresh(&mut store, &refresh_token, 1002).is_err());
    }

    #[test]
    fn spent_refresh_token_reuse_revokes_the_family() {
        let (mut store, _, r1) = store_with_refresh_token();
        let next = refresh(&mut store, &r1, 1001).expect("rotates");
        let r2 = store.issue_refresh_token(next.family, "jti-2", 5000);
        assert!(refresh(&mut store, &r1, 1002).is_err());
        assert!(
            refresh(&mut store, &r2, 1003).is_err(),
            "newest revoked too"
        );
        assert!(store.is_revoked("jti-2"));
    }

    #[test]
    fn refresh_may_narrow_but_not_widen_scope() {
        let (mut store, _, r1) = store_with_refresh_token();
        let wider = Some(vec!["a".to_owned(), "b".to_owned()]);
        assert!(store.spend_refresh_token(&r1, "spa", wider, 1001).is_err());
        let narrowed = store.spend_refresh_token(&r1, "spa", Some(vec![]), 1001);
        assert!(narrowed.expect("narrows").grant.scope.is_empty());
    }

    #[test]
    fn refresh_token_expires() {
        let (mut store, _, r1) = store_with_refresh_token();
        assert!(refresh(&mut store, &r1, 5000).is_err());
    }
}
