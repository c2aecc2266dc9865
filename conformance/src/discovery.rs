//! Content discovery cases: the tag list (whole, `n`, `n` with `last`, `last` alone,
//! `n=0`, the `Link` header) and the catalog where a registry offers it.

use anyhow::{Result, bail};
use reqwest::Method;
use serde::Deserialize;

use crate::Category;
use crate::client::Resp;
use crate::suite::{Ctx, Recorder, need, skip};

const C: Category = Category::Discovery;

/// The tag list body.
#[derive(Debug, Deserialize)]
pub(crate) struct TagList {
    /// Repository name.
    pub name: String,
    /// Tags; `null` is read as empty.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// The `rel="next"` target of a `Link` header, if any.
pub(crate) fn next_link(resp: &Resp) -> Option<String> {
    resp.header_all("Link").into_iter().find_map(|v| {
        v.split(',').find_map(|part| {
            let part = part.trim();
            let (target, params) = part.split_once(';')?;
            let is_next = params
                .split(';')
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_owned())
        })
    })
}

/// `GET /v2/<repo>/tags/list` with a query string (may be empty).
pub(crate) async fn tags(cx: &Ctx, repo: &str, query: &str) -> Result<Resp> {
    let path = if query.is_empty() {
        format!("/v2/{repo}/tags/list")
    } else {
        format!("/v2/{repo}/tags/list?{query}")
    };
    cx.http.get(&path).await
}

/// The complete tag list, following `Link` headers.
pub(crate) async fn all_tags(cx: &Ctx, repo: &str) -> Result<Vec<String>> {
    let mut resp = tags(cx, repo, "").await?;
    let mut out = Vec::new();
    for _ in 0..100 {
        out.extend(page_tags(&resp)?);
        match next_link(&resp) {
            Some(next) => {
                let url = cx.http.resolve(&next)?;
                resp = cx.http.call(Method::GET, &url, |r| r).await?;
            }
            None => return Ok(out),
        }
    }
    bail!("tag list still had a next page after 100 pages")
}

/// Requires 200 and returns the tags of one tag list page.
fn page_tags(resp: &Resp) -> Result<Vec<String>> {
    resp.expect(&[200])?;
    Ok(resp.json::<TagList>()?.tags.unwrap_or_default())
}

/// Requires the page `got` to be `expected`, or fewer of its first tags only when a `Link`
/// header leads to the rest.
fn expect_page(resp: &Resp, got: &[String], expected: &[String]) -> Result<()> {
    let link = next_link(resp).is_some();
    if got.len() > expected.len()
        || (got.len() < expected.len() && !link)
        || got[..] != expected[..got.len()]
    {
        bail!("{}: got {got:?}, expected {expected:?}", resp.what);
    }
    Ok(())
}

/// Whether `tags` is in lexical (case-insensitive) or ASCII order, as the spec allows.
fn sorted(tags: &[String]) -> bool {
    let ascii = tags.windows(2).all(|w| w[0] <= w[1]);
    let lexical = tags
        .windows(2)
        .all(|w| w[0].to_lowercase() <= w[1].to_lowercase());
    ascii || lexical
}

/// Runs the discovery cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let list_tags: Vec<String> = (0..4).map(|i| format!("list-{}-{i}", cx.run_id)).collect();
    rec.case(
        C,
        "setup: PUT the test manifest under four more tags: 201 each",
        async {
            cx.ensure_fixture().await?;
            for t in &list_tags {
                cx.push_manifest(repo, t, &cx.fixture.manifest).await?;
            }
            Ok(())
        },
    )
    .await;

    let mut full: Option<Vec<String>> = None;
    rec.case(
        C,
        "GET tags/list: 200 with the repository name and every pushed tag, in lexical order",
        async {
            let resp = tags(cx, repo, "").await?;
            resp.expect(&[200])?;
            let list: TagList = resp.json()?;
            if list.name != *repo {
                bail!("{}: name is {:?}, expected {repo:?}", resp.what, list.name);
            }
            let all = all_tags(cx, repo).await?;
            for t in list_tags.iter().chain([&cx.fixture_tag]) {
                if !all.contains(t) {
                    bail!("{}: tag {t:?} is missing from {all:?}", resp.what);
                }
            }
            if !sorted(&all) {
                bail!("{}: tags are not in lexical order: {all:?}", resp.what);
            }
            full = Some(all);
            Ok(())
        },
    )
    .await;

    let mut first_page: Option<Resp> = None;
    rec.case(
        C,
        "GET tags/list?n=2: the first 2 tags (fewer only with a Link header)",
        async {
            let all = need(&full, "list tags")?;
            let resp = tags(cx, repo, "n=2").await?;
            let got = page_tags(&resp)?;
            expect_page(&resp, &got, &all[..all.len().min(2)])?;
            first_page = Some(resp);
            Ok(())
        },
    )
    .await;

    rec.case(
        C,
        "GET tags/list?n=2&last=<2nd tag>: the tags after it, exclusive of it",
        async {
            let all = need(&full, "list tags")?;
            let last = &all[1];
            let resp = tags(cx, repo, &format!("n=2&last={last}")).await?;
            let expected: Vec<String> = all.iter().skip(2).take(2).cloned().collect();
            expect_page(&resp, &page_tags(&resp)?, &expected)
        },
    )
    .await;

    rec.case(
        C,
        "GET tags/list?last=<tag> without n: every tag after it",
        async {
            let all = need(&full, "list tags")?;
            let last = &all[0];
            let resp = tags(cx, repo, &format!("last={last}")).await?;
            let got = page_tags(&resp)?;
            if got
                .iter()
                .any(|t| t <= last && t.to_lowercase() <= last.to_lowercase())
            {
                bail!(
                    "{}: got {got:?}, which includes tags not after {last:?}",
                    resp.what
                );
            }
            expect_page(&resp, &got, &all[1..])
        },
    )
    .await;

    rec.case(
        C,
        "GET tags/list?n=0: an empty list and no Link header",
        async {
            need(&full, "list tags")?;
            let resp = tags(cx, repo, "n=0").await?;
            let got = page_tags(&resp)?;
            if !got.is_empty() {
                bail!("{}: got {got:?}, expected no tags", resp.what);
            }
            if let Some(l) = next_link(&resp) {
                bail!("{}: has a Link header to {l:?}", resp.what);
            }
            Ok(())
        },
    )
    .await;

    rec.case(
        C,
        "tags/list Link header: rel=\"next\" leads to the following page",
        async {
            let all = need(&full, "list tags")?;
            let page = need(&first_page, "list tags with n=2")?;
            let Some(next) = next_link(page) else {
                return Err(skip(
                    "the registry sends no Link header with n=2 (optional in the spec)",
                ));
            };
            let url = cx.http.resolve(&next)?;
            let resp = cx.http.call(Method::GET, &url, |r| r).await?;
            let got = page_tags(&resp)?;
            let expected: Vec<String> = all.iter().skip(2).take(got.len()).cloned().collect();
            if got.is_empty() || got != expected {
                bail!(
                    "{}: got {got:?}, expected the tags after the first two: {expected:?}",
                    resp.what
                );
            }
            Ok(())
        },
    )
    .await;

    rec.case(C, "GET /v2/_catalog (not part of the spec; checked when offered): lists the test repository, n=1 returns one", async {
        cx.ensure_fixture().await?;
        let resp = cx.http.get("/v2/_catalog").await?;
        if matches!(resp.status.as_u16(), 404 | 405 | 401 | 403) {
            return Err(skip(format!("the registry does not offer the catalog ({})", resp.status)));
        }
        resp.expect(&[200])?;
        #[derive(Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let mut names = Vec::new();
        let mut page = resp;
        for _ in 0..100 {
            let cat: Catalog = page.json()?;
            names.extend(cat.repositories.unwrap_or_default());
            match next_link(&page) {
                Some(n) => page = cx.http.call(Method::GET, &cx.http.resolve(&n)?, |r| r).await?,
                None => break,
            }
            page.expect(&[200])?;
        }
        if !names.contains(repo) {
            bail!("GET /v2/_catalog: {repo:?} is not among {names:?}");
        }
        let one = cx.http.get("/v2/_catalog?n=1").await?;
        one.expect(&[200])?;
        let cat: Catalog = one.json()?;
        if cat.repositories.unwrap_or_default().len() != 1 {
            bail!("{}: expected exactly one repository", one.what);
        }
        Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_accepts_ascii_and_case_insensitive() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(sorted(&v(&["A", "b", "c"])));
        assert!(sorted(&v(&["B", "a"])));
        assert!(!sorted(&v(&["b", "a"])));
    }
}
