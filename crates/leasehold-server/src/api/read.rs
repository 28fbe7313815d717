//! `Get` and `List`: reads of the applied state on the serving leader.

use leasehold_core::machine::{validate_resource, validate_text};
use leasehold_proto::v1 as pb;

use super::convert::resource_to_proto;
use super::error::ApiError;
use super::request;
use super::service::LeaseApi;

/// Default page of `List`.
pub const LIST_PAGE_DEFAULT: usize = 100;
/// Largest page of `List`.
pub const LIST_PAGE_MAX: usize = 1_000;

/// Checks a `List` page token: empty (the first page), or the last name of
/// a previous page of the same prefix, which is a valid resource name that
/// starts with the prefix.
pub(super) fn check_page_token(prefix: &str, token: &str) -> Result<(), ApiError> {
    if token.is_empty() {
        return Ok(());
    }
    let valid = validate_resource(token).is_ok()
        && validate_text("page_token", token).is_ok()
        && token.starts_with(prefix);
    if valid {
        return Ok(());
    }
    Err(ApiError::invalid(
        "page_token",
        format!(
            "{:?} is not a token a previous page of prefix {prefix:?} returned",
            token.chars().take(64).collect::<String>()
        ),
    ))
}

impl LeaseApi {
    pub(super) async fn get_local(&self, req: pb::GetRequest) -> Result<pb::GetResponse, ApiError> {
        request::get(&req)?;
        Ok(self.state.read(|s| pb::GetResponse {
            state: Some(resource_to_proto(s, &self.lessor, &req.resource)),
            revision: s.revision(),
        }))
    }

    pub(super) async fn list_local(
        &self,
        req: pb::ListRequest,
    ) -> Result<pb::ListResponse, ApiError> {
        let page = request::list(&req)?;
        let after = req.page_token;
        Ok(self.state.read(|s| {
            let start = if after.as_str() > req.prefix.as_str() {
                after.as_str()
            } else {
                req.prefix.as_str()
            };
            let mut names: Vec<&String> = s
                .resources_from(start)
                .map(|(n, _)| n)
                .filter(|n| n.as_str() != after)
                .take_while(|n| n.starts_with(&req.prefix))
                .take(page + 1)
                .collect();
            let next = if names.len() > page {
                names.truncate(page);
                names.last().map(|n| n.to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            pb::ListResponse {
                resources: names
                    .iter()
                    .map(|n| resource_to_proto(s, &self.lessor, n))
                    .collect(),
                next_page_token: next,
                revision: s.revision(),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_are_checked() {
        assert!(check_page_token("a/", "").is_ok());
        assert!(check_page_token("a/", "a/x").is_ok());
        let long = format!(
            "a/{}",
            "x".repeat(leasehold_core::limits::RESOURCE_NAME_BYTES_MAX)
        );
        for bad in ["b/x", "a/\u{1b}[2J", long.as_str()] {
            match check_page_token("a/", bad) {
                Err(ApiError::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "page_token");
                    assert!(reason.contains("not a token a previous page"), "{reason}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
