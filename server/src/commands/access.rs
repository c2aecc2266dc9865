//! `stowage admin` and `stowage token`: the access model from the command line, either
//! on the store directly (as the operator, who holds the store and so everything) or
//! through a server's admin API (`--server URL --token T`, as the token's account).
//! Both send the same [`Op`]s, checked by the same rules.

use std::io::Read as _;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use stowage_auth::{
    Action, Auth, AuthConfig, Caller, Op, Principal, Subject, TokenAccess, Visibility,
};
use stowage_storage::{Store, StoreOptions};

/// The account the CLI acts as on the store directly: a bootstrap admin of this process.
const OPERATOR: &str = "store-operator";

/// Where the operations go.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Go through this server's admin API instead of the store (e.g. http://127.0.0.1:5000).
    #[arg(long, global = true, env = "STOWAGE_SERVER")]
    server: Option<String>,
    /// Token (or password with --username) to authenticate to --server.
    #[arg(long, global = true, env = "STOWAGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Username for --token when it is a password.
    #[arg(long, global = true, env = "STOWAGE_USERNAME")]
    username: Option<String>,
    /// The registry's address as clients type it, for printed login commands.
    #[arg(long, global = true, env = "STOWAGE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

/// `stowage admin ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Users: people with a password and/or tokens.
    #[command(subcommand)]
    User(UserCommand),
    /// Teams of users.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Namespaces: public (anonymous pull and listing) or private.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Robot accounts (`namespace+name`) for CI: tokens only.
    #[command(subcommand)]
    Robot(RobotCommand),
    /// Grant an action on a namespace (or a glob of them) to a user, team or robot.
    Grant(GrantArgs),
    /// Take a grant back.
    Ungrant(GrantArgs),
    /// Show the policy.
    Show,
    /// Who the credentials belong to and what they may do.
    Whoami,
}

/// `stowage admin user ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum UserCommand {
    /// Create a user.
    Create {
        /// Name: [a-z0-9][a-z0-9._-]{0,63}.
        name: String,
        /// Read a password from standard input (else the user logs in with tokens only).
        #[arg(long)]
        password_stdin: bool,
        /// Make them a registry-wide admin.
        #[arg(long)]
        admin: bool,
    },
    /// Delete a user, their grants and memberships.
    Delete {
        /// Name.
        name: String,
    },
    /// Set a user's password from standard input (or remove it with --none).
    Password {
        /// Name.
        name: String,
        /// Remove password login.
        #[arg(long)]
        none: bool,
    },
}

/// `stowage admin team ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum TeamCommand {
    /// Create a team.
    Create {
        /// Name.
        name: String,
    },
    /// Delete a team and its grants.
    Delete {
        /// Name.
        name: String,
    },
    /// Add a user to a team.
    Add {
        /// Team.
        team: String,
        /// User.
        user: String,
    },
    /// Remove a user from a team.
    Remove {
        /// Team.
        team: String,
        /// User.
        user: String,
    },
}

/// Public or private, as flags.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct VisibilityFlag {
    /// Anonymous pull and listing.
    #[arg(long)]
    public: bool,
    /// Only those with grants.
    #[arg(long)]
    private: bool,
}

impl VisibilityFlag {
    fn get(&self) -> Visibility {
        if self.public {
            Visibility::Public
        } else {
            Visibility::Private
        }
    }
}

/// `stowage admin namespace ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum NamespaceCommand {
    /// Create a namespace.
    Create {
        /// Name (the first component of repository names).
        name: String,
        #[command(flatten)]
        visibility: VisibilityFlag,
    },
    /// Change a namespace's visibility.
    Set {
        /// Name.
        name: String,
        #[command(flatten)]
        visibility: VisibilityFlag,
    },
    /// Forget a namespace's settings and grants (its repositories stay, private).
    Delete {
        /// Name.
        name: String,
    },
}

/// `stowage admin robot ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum RobotCommand {
    /// Create a robot account.
    Create {
        /// `namespace+name`.
        name: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a robot account (its tokens stop working).
    Delete {
        /// `namespace+name`.
        name: String,
    },
}

/// Exactly one subject.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct SubjectFlag {
    /// A user.
    #[arg(long)]
    user: Option<String>,
    /// A team.
    #[arg(long)]
    team: Option<String>,
    /// A robot (`namespace+name`).
    #[arg(long)]
    robot: Option<String>,
}

impl SubjectFlag {
    fn get(&self) -> Subject {
        match (&self.user, &self.team, &self.robot) {
            (Some(u), _, _) => Subject::User(u.clone()),
            (_, Some(t), _) => Subject::Team(t.clone()),
            (_, _, Some(r)) => Subject::Robot(r.clone()),
            _ => unreachable!("clap requires one"),
        }
    }
}

/// `stowage admin grant|ungrant ACTION --namespace NS --user|--team|--robot NAME`.
#[derive(Args, Debug, Clone)]
pub struct GrantArgs {
    /// pull, push (implies pull), delete or admin (implies all).
    action: String,
    /// A namespace or a glob of namespaces (`*` matches any run of characters).
    #[arg(long)]
    namespace: String,
    #[command(flatten)]
    subject: SubjectFlag,
}

/// `stowage token ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum TokenCommand {
    /// Create a token; prints its secret once, with the login command.
    Create {
        /// For this user (default: yourself, through --server).
        #[arg(long, conflicts_with = "robot")]
        user: Option<String>,
        /// For this robot account.
        #[arg(long)]
        robot: Option<String>,
        /// Expire after this long (90d, 12h, 2w); never by default.
        #[arg(long)]
        expires: Option<String>,
        /// pull, push or full (whatever the account may do).
        #[arg(long, default_value = "full")]
        access: String,
        /// Only in namespaces matching this (a name or a glob).
        #[arg(long)]
        namespace: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Print only the secret.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this user's.
        #[arg(long, conflicts_with = "robot")]
        user: Option<String>,
        /// Only this robot's.
        #[arg(long)]
        robot: Option<String>,
    },
    /// Revoke a token by id or by the secret itself.
    Revoke {
        /// Id or secret.
        token: String,
    },
}

fn owner(user: Option<String>, robot: Option<String>) -> Option<Principal> {
    user.map(Principal::User).or(robot.map(Principal::Robot))
}

fn read_password() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    let p = s.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !p.is_empty(),
        "the password read from standard input is empty"
    );
    Ok(p)
}

impl AdminCommand {
    fn op(self) -> anyhow::Result<Op> {
        Ok(match self {
            AdminCommand::User(UserCommand::Create {
                name,
                password_stdin,
                admin,
            }) => Op::UserCreate {
                name,
                password: password_stdin.then(read_password).transpose()?,
                admin,
            },
            AdminCommand::User(UserCommand::Delete { name }) => Op::UserDelete { name },
            AdminCommand::User(UserCommand::Password { name, none }) => Op::UserPassword {
                name,
                password: if none { None } else { Some(read_password()?) },
            },
            AdminCommand::Team(TeamCommand::Create { name }) => Op::TeamCreate { name },
            AdminCommand::Team(TeamCommand::Delete { name }) => Op::TeamDelete { name },
            AdminCommand::Team(TeamCommand::Add { team, user }) => Op::TeamAdd { team, user },
            AdminCommand::Team(TeamCommand::Remove { team, user }) => Op::TeamRemove { team, user },
            AdminCommand::Namespace(NamespaceCommand::Create { name, visibility }) => {
                Op::NamespaceCreate {
                    name,
                    visibility: visibility.get(),
                }
            }
            AdminCommand::Namespace(NamespaceCommand::Set { name, visibility }) => {
                Op::NamespaceSet {
                    name,
                    visibility: visibility.get(),
                }
            }
            AdminCommand::Namespace(NamespaceCommand::Delete { name }) => {
                Op::NamespaceDelete { name }
            }
            AdminCommand::Robot(RobotCommand::Create { name, description }) => {
                Op::RobotCreate { name, description }
            }
            AdminCommand::Robot(RobotCommand::Delete { name }) => Op::RobotDelete { name },
            AdminCommand::Grant(g) | AdminCommand::Ungrant(g)
                if Action::parse(&g.action).is_none() =>
            {
                anyhow::bail!(
                    "{:?} is not an action: use pull, push, delete or admin",
                    g.action
                )
            }
            AdminCommand::Grant(g) => Op::Grant {
                subject: g.subject.get(),
                namespace: g.namespace,
                action: Action::parse(&g.action).unwrap_or(Action::Pull),
            },
            AdminCommand::Ungrant(g) => Op::Ungrant {
                subject: g.subject.get(),
                namespace: g.namespace,
                action: Action::parse(&g.action).unwrap_or(Action::Pull),
            },
            AdminCommand::Show => Op::Show,
            AdminCommand::Whoami => Op::Whoami,
        })
    }
}

impl TokenCommand {
    fn op(self) -> anyhow::Result<(Op, bool)> {
        Ok(match self {
            TokenCommand::Create {
                user,
                robot,
                expires,
                access,
                namespace,
                description,
                quiet,
            } => {
                let expires_in = expires
                    .as_deref()
                    .map(|e| {
                        stowage_gc::parse_duration(e).map_err(|e| anyhow::anyhow!("--expires: {e}"))
                    })
                    .transpose()?
                    .map(|d| d.as_secs());
                let access = TokenAccess::parse(&access).ok_or_else(|| {
                    anyhow::anyhow!("--access {access:?}: use pull, push or full")
                })?;
                (
                    Op::TokenCreate {
                        owner: owner(user, robot),
                        expires_in,
                        access,
                        namespace,
                        description,
                    },
                    quiet,
                )
            }
            TokenCommand::List { user, robot } => (
                Op::TokenList {
                    owner: owner(user, robot),
                },
                false,
            ),
            TokenCommand::Revoke { token } => (Op::TokenRevoke { token }, false),
        })
    }
}

/// Carries out one operation where `target` says; the JSON answer.
async fn apply(options: StoreOptions, target: &Target, op: Op) -> anyhow::Result<Value> {
    match &target.server {
        Some(server) => {
            let url = format!("{}/stowage/v1/admin", server.trim_end_matches('/'));
            let client = reqwest::Client::new();
            let mut req = client.post(&url).json(&op);
            match (&target.username, &target.token) {
                (Some(u), Some(t)) => req = req.basic_auth(u, Some(t)),
                (None, Some(t)) => req = req.bearer_auth(t),
                _ => {}
            }
            let resp = req.send().await.with_context(|| format!("POST {url}"))?;
            let status = resp.status();
            let body: Value = resp
                .json()
                .await
                .with_context(|| format!("reading the answer of {url}"))?;
            if !status.is_success() {
                let msg = body["errors"][0]["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| body.to_string());
                anyhow::bail!("{status}: {msg}");
            }
            Ok(body)
        }
        None => {
            let mut options = options;
            // The policy is tiny; the chunk index is not needed to change it.
            options.dedup_index = false;
            let store = Store::open(options).await?;
            let config = AuthConfig {
                admins: vec![OPERATOR.to_string()],
                ..AuthConfig::default()
            };
            let auth = Auth::open(&store, config).await?;
            let operator = Caller::account(Principal::User(OPERATOR.into()));
            Ok(auth.apply(&operator, op).await?)
        }
    }
}

/// `stowage admin ...`.
pub async fn admin(options: StoreOptions, target: Target, cmd: AdminCommand) -> anyhow::Result<()> {
    let op = cmd.op()?;
    let show = matches!(op, Op::Show | Op::Whoami);
    let answer = apply(options, &target, op).await?;
    if target.json || show {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("ok: {answer}");
    }
    Ok(())
}

/// The registry's host[:port] as `docker login` takes it.
fn registry_host(target: &Target) -> String {
    let url = target
        .public_url
        .clone()
        .or_else(|| target.server.clone())
        .unwrap_or_else(|| format!("http://{}", stowage_server::config::DEFAULT_LISTEN));
    stowage_server::address::registry_host(&url)
}

/// `stowage token ...`.
pub async fn token(options: StoreOptions, target: Target, cmd: TokenCommand) -> anyhow::Result<()> {
    let (op, quiet) = cmd.op()?;
    let kind = op.name();
    let answer = apply(options, &target, op).await?;
    if target.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match kind {
        "token-create" => {
            let secret = answer["token"].as_str().unwrap_or_default();
            if quiet {
                println!("{secret}");
                return Ok(());
            }
            let host = registry_host(&target);
            println!(
                "token {} for {} (shown once; store it now):",
                answer["id"].as_str().unwrap_or(""),
                answer["owner"].as_str().unwrap_or("")
            );
            println!("  {secret}");
            println!("log in with:");
            println!("  docker login -u unused -p {secret} {host}");
            println!("  podman login -u unused -p {secret} {host}");
            println!("  skopeo login -u unused -p {secret} {host}");
        }
        "token-list" => {
            println!(
                "{:<20}  {:<24}  {:<6}  {:<8}  {:<20}  {:<20}  DESCRIPTION",
                "ID", "OWNER", "ACCESS", "STATE", "EXPIRES", "LAST USED"
            );
            for t in answer["tokens"].as_array().into_iter().flatten() {
                let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                println!(
                    "{:<20}  {:<24}  {:<6}  {:<8}  {:<20}  {:<20}  {}",
                    s("id"),
                    s("owner"),
                    s("access"),
                    s("state"),
                    s("expires").chars().take(19).collect::<String>(),
                    s("last_used").chars().take(19).collect::<String>(),
                    s("description")
                );
            }
        }
        _ => println!(
            "revoked token {} of {}",
            answer["id"].as_str().unwrap_or(""),
            answer["owner"].as_str().unwrap_or("")
        ),
    }
    Ok(())
}
