//! The catalogs' relations: their columns, and their rows built from storage's metric and
//! label names.

use promflow_storage::{MatchOp, Matcher};
use sqlparser::ast::{ObjectName, TableFactor};

use super::{
    fnv, split, type_oid, unsupported, Catalog, Relation, Table, CATALOG_SCHEMAS, FIRST_TABLE_OID, HEAP,
    INFORMATION_SCHEMA, MAX_CELLS, MAX_ROWS, PG_CATALOG, PG_TOAST, PUBLIC, ROLE, TYPES, V,
};
use crate::compile::ColumnKind;
use crate::exec::{ExecError, ALL_TIME};
use crate::rows::{table_columns, Cell};

/// PostgreSQL's `pg_default` tablespace, every database's (`pg_global` is the next oid).
const DEFAULT_TABLESPACE: i64 = 1663;

/// The columns of a catalog relation, by its name (`None` for names that are not one).
#[rustfmt::skip]
pub(super) fn relation_columns(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "pg_namespace" => &["oid", "nspname", "nspowner", "nspacl"],
        "pg_class" => &[
            "oid", "relname", "relnamespace", "reltype", "relowner", "relam", "relkind", "relnatts", "relchecks",
            "relhasindex", "relhasrules", "relhastriggers", "relhassubclass", "relrowsecurity",
            "relforcerowsecurity", "relispartition", "reloptions", "reltablespace", "reloftype",
            "relpersistence", "relreplident", "reltoastrelid", "relpartbound", "reltuples", "relpages", "relacl",
        ],
        "pg_attribute" => &[
            "attrelid", "attname", "atttypid", "atttypmod", "attnum", "attnotnull", "attisdropped",
            "atthasdef", "attcollation", "attidentity", "attgenerated", "attlen", "attndims", "attstorage",
            "attcompression", "attstattarget", "attacl",
        ],
        "pg_type" => &[
            "oid", "typname", "typnamespace", "typowner", "typlen", "typtype", "typcollation", "typbasetype",
            "typelem", "typnotnull", "typarray", "typdelim", "typrelid", "typtypmod",
        ],
        "pg_am" => &["oid", "amname", "amtype"],
        "pg_database" => &[
            "oid", "datname", "datdba", "encoding", "datallowconn", "datistemplate", "datlocprovider", "datcollate",
            "datctype", "daticulocale", "datacl", "dattablespace",
        ],
        "pg_tablespace" => &["oid", "spcname", "spcowner", "spcacl", "spcoptions"],
        "pg_roles" | "pg_user" => &[
            "oid", "rolname", "usename", "rolsuper", "rolinherit", "rolcreaterole", "rolcreatedb", "rolcanlogin",
            "rolconnlimit", "rolvaliduntil", "rolreplication", "rolbypassrls",
        ],
        "tables" => &["table_catalog", "table_schema", "table_name", "table_type"],
        "columns" => &[
            "table_catalog", "table_schema", "table_name", "column_name", "ordinal_position", "data_type",
            "is_nullable", "udt_name", "column_default", "character_maximum_length", "numeric_precision",
            "numeric_precision_radix", "numeric_scale", "datetime_precision", "udt_schema", "is_identity",
            "is_generated",
        ],
        "schemata" => &["catalog_name", "schema_name", "schema_owner"],
        "pg_settings" => &["name", "setting", "vartype", "source"],
        "pg_tables" => &[
            "schemaname", "tablename", "tableowner", "tablespace", "hasindexes", "hasrules", "hastriggers",
            "rowsecurity",
        ],
        // kept empty: promflow has no constraints, indexes, defaults, policies, rules,
        // triggers, inheritance, publications, statistics objects, comments, enums or ranges
        "pg_attrdef" | "pg_collation" | "pg_index" | "pg_constraint" | "pg_inherits" | "pg_policy"
        | "pg_statistic_ext" | "pg_publication" | "pg_publication_namespace" | "pg_publication_rel"
        | "pg_trigger" | "pg_rewrite" | "pg_description" | "pg_auth_members" | "pg_foreign_table"
        | "pg_partitioned_table" | "pg_sequence" | "pg_proc" | "pg_extension"
        | "pg_views" | "pg_matviews" | "pg_indexes" | "pg_enum" | "pg_range" => &[],
        _ => return None,
    })
}

impl Catalog<'_> {
    /// Whether `f` reads a metric (in a relational query): a table that is neither a common
    /// table expression in scope nor a catalog's. Returns its alias and metric name.
    pub(super) fn metric_table(&self, f: &TableFactor) -> Option<(String, String)> {
        let TableFactor::Table { name, alias, args: None, .. } = f else { return None };
        let (schema, table) = split(name);
        let catalog = schema.as_ref().is_some_and(|s| CATALOG_SCHEMAS.contains(&s.as_str()))
            || (schema.is_none() && relation_columns(&table).is_some());
        let cte = self.cte(name).is_some();
        // a quoted name keeps its case
        let metric = name.0.last().and_then(|p| p.as_ident()).map(crate::compile::folded)?;
        (self.metrics.is_some() && !catalog && !cte)
            .then(|| (alias.as_ref().map_or_else(|| metric.clone(), |a| a.name.value.clone()), metric))
    }

    /// Whether a query may go on holding `rows` rows: within the statement's deadline
    /// (`--query.timeout`) and [`MAX_ROWS`] (nested-loop joins of large tables, metric or
    /// catalog, would otherwise hold the server's memory and a worker for as long as they
    /// take).
    pub(super) fn check(&self, rows: usize, columns: usize) -> Result<(), ExecError> {
        self.check_deadline()?;
        if rows > MAX_ROWS || rows.saturating_mul(columns) > MAX_CELLS {
            return Err(ExecError::Catalog(format!(
                "the query's joins make more than {MAX_ROWS} rows or {MAX_CELLS} values: bound the tables' ts, or aggregate in CTEs before joining"
            )));
        }
        Ok(())
    }

    /// Whether the statement is still within its deadline and wanted; checked by every
    /// (sub)query run, so that correlated subqueries, run once per row, stop too.
    pub(super) fn check_deadline(&self) -> Result<(), ExecError> {
        Ok(promflow_plan::Stop { deadline: Some(self.deadline), canceled: self.canceled }.check()?)
    }

    /// The common table expression `name` names, if one in scope does (the innermost).
    pub(super) fn cte(&self, name: &ObjectName) -> Option<&Relation> {
        let (schema, table) = split(name);
        schema.is_none().then(|| self.ctes.iter().rev().find(|(n, _)| *n == table).map(|(_, r)| r)).flatten()
    }

    /// The rows of a single metric's query (its text), run through its plans.
    pub(super) fn metric_rows(&self, sql: &str) -> Result<Relation, ExecError> {
        let Some(m) = &self.metrics else { return Err(unsupported("a metric in a catalog query")) };
        let compiled =
            crate::compile::compile(sql, m.now).map_err(|e| ExecError::Catalog(format!("in {sql}: {e}")))?;
        let crate::Statement::Select(q) = compiled else {
            return Err(ExecError::Catalog(format!("{sql} is not a metric's query")));
        };
        let rows = crate::exec::run(&q, self.querier, m.settings, self.deadline)?;
        let value = |c: &Cell| match c {
            Cell::Null => V::Null,
            Cell::Bool(b) => V::Bool(*b),
            Cell::Text(t) => V::Text(t.to_string()),
            // timestamps as seconds since the epoch, as the JSON answer writes them
            Cell::Number(v) | Cell::Timestamp(v) => V::Float(*v),
        };
        Ok(Relation {
            columns: rows.columns.iter().map(|c| c.name.clone()).collect(),
            rows: rows.iter().map(|r| r.cells().map(|c| value(&c)).collect()).collect(),
        })
    }

    /// The metrics as tables, oids stable across queries: a hash of the name, moved on past
    /// a collision (so psql's second query finds the table its first one named).
    pub(super) fn tables(&mut self, columns: bool) -> Result<&[Table], ExecError> {
        if self.tables.is_none() || (columns && !self.with_columns) {
            let names = self.querier.label_values("__name__", &[], ALL_TIME.0, ALL_TIME.1)?;
            let mut taken = std::collections::HashSet::new();
            let mut tables = Vec::with_capacity(names.len());
            for name in names {
                let span = (i32::MAX as i64) - FIRST_TABLE_OID;
                let mut oid = FIRST_TABLE_OID + (fnv(&name) % span as u64) as i64;
                while !taken.insert(oid) {
                    oid = FIRST_TABLE_OID + (oid - FIRST_TABLE_OID + 1) % span;
                }
                let columns = if columns {
                    let m = Matcher::new(MatchOp::Equal, "__name__", name.as_str())?;
                    let labels =
                        self.querier.label_names(std::slice::from_ref(&m), ALL_TIME.0, ALL_TIME.1)?;
                    table_columns(&labels, self.querier.has_histograms(&[m], ALL_TIME.0, ALL_TIME.1)?)
                } else {
                    Vec::new()
                };
                tables.push(Table { name, oid, columns });
            }
            self.tables = Some(tables);
            self.with_columns = columns;
        }
        Ok(self.tables.as_deref().unwrap_or_default())
    }

    /// The relation `name` (of `schema`, when given).
    pub(super) fn relation(&mut self, schema: Option<&str>, name: &str) -> Result<Relation, ExecError> {
        let Some(columns) = relation_columns(name) else {
            return Err(ExecError::NoTable(name.into()));
        };
        let info = schema == Some("information_schema");
        if info != matches!(name, "tables" | "columns" | "schemata") {
            return Err(ExecError::NoTable(format!("{}.{name}", schema.unwrap_or("pg_catalog"))));
        }
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let t = V::text;
        let rows: Vec<Vec<V>> = match name {
            "pg_namespace" => [
                (PG_CATALOG, "pg_catalog"),
                (PUBLIC, "public"),
                (INFORMATION_SCHEMA, "information_schema"),
                (PG_TOAST, "pg_toast"),
            ]
            .into_iter()
            .map(|(oid, n)| vec![V::Int(oid), t(n), V::Int(10), V::Null])
            .collect(),
            "pg_tables" => self
                .tables(false)?
                .iter()
                .map(|table| {
                    let f = V::Bool(false);
                    vec![t("public"), t(&table.name), t(ROLE), V::Null, f.clone(), f.clone(), f.clone(), f]
                })
                .collect(),
            "schemata" => ["pg_catalog", "public", "information_schema", "pg_toast"]
                .into_iter()
                .map(|n| vec![t("promflow"), t(n), t(ROLE)])
                .collect(),
            "pg_class" => self
                .tables(false)?
                .iter()
                .map(|table| {
                    let f = V::Bool(false);
                    vec![
                        V::Int(table.oid),
                        t(&table.name),
                        V::Int(PUBLIC),
                        V::Int(0),
                        V::Int(10),
                        V::Int(HEAP),
                        t("r"),
                        V::Int(0),
                        V::Int(0),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f.clone(),
                        f,
                        V::Null,
                        V::Int(0),
                        V::Int(0),
                        t("p"),
                        t("d"),
                        V::Int(0),
                        V::Null,
                        V::Float(-1.0),
                        V::Int(0),
                        V::Null,
                    ]
                })
                .collect(),
            "pg_attribute" => {
                let mut rows = Vec::new();
                for table in self.tables(true)? {
                    for (i, (column, kind)) in table.columns.iter().enumerate() {
                        let sample = *kind != ColumnKind::Text;
                        rows.push(vec![
                            V::Int(table.oid),
                            t(column),
                            V::Int(type_oid(*kind)),
                            V::Int(-1),
                            V::Int(i as i64 + 1),
                            // no column is declared NOT NULL, as in the table a client creates
                            // in PostgreSQL to hold a metric's samples (`ts timestamptz,
                            // value double precision`): schema tools compare equal
                            V::Bool(false),
                            V::Bool(false),
                            V::Bool(false),
                            V::Int(if sample { 0 } else { 100 }),
                            t(""),
                            t(""),
                            V::Int(-1),
                            V::Int(0),
                            // text is stored extended, numbers and times plain
                            t(if sample { "p" } else { "x" }),
                            t(""),
                            V::Int(-1),
                            V::Null,
                        ]);
                    }
                }
                rows
            }
            "tables" => self
                .tables(false)?
                .iter()
                .map(|table| vec![t("promflow"), t("public"), t(&table.name), t("BASE TABLE")])
                .collect(),
            "columns" => {
                let mut rows = Vec::new();
                for table in self.tables(true)? {
                    for (i, (column, kind)) in table.columns.iter().enumerate() {
                        let (_, udt, data_type, _) =
                            TYPES.iter().find(|x| x.0 == type_oid(*kind)).copied().unwrap_or_default();
                        rows.push(vec![
                            t("promflow"),
                            t("public"),
                            t(&table.name),
                            t(column),
                            V::Int(i as i64 + 1),
                            t(data_type),
                            // declared as PostgreSQL declares the same table created without
                            // constraints (see `attnotnull`)
                            t("YES"),
                            t(udt),
                            V::Null,
                            V::Null,
                            // a double's 53 binary digits; a timestamptz's 6 decimals
                            if *kind == ColumnKind::Double { V::Int(53) } else { V::Null },
                            if *kind == ColumnKind::Double { V::Int(2) } else { V::Null },
                            V::Null,
                            if *kind == ColumnKind::Timestamp { V::Int(6) } else { V::Null },
                            t("pg_catalog"),
                            t("NO"),
                            t("NEVER"),
                        ]);
                    }
                }
                rows
            }
            "pg_type" => TYPES
                .iter()
                .map(|(oid, n, _, array)| {
                    let collation = if *n == "text" { 100 } else { 0 };
                    vec![
                        V::Int(*oid),
                        t(n),
                        V::Int(PG_CATALOG),
                        V::Int(10),
                        V::Int(-1),
                        t("b"),
                        V::Int(collation),
                        V::Int(0),
                        V::Int(0),
                        V::Bool(false),
                        V::Int(*array),
                        t(","),
                        V::Int(0),
                        V::Int(-1),
                    ]
                })
                .collect(),
            "pg_am" => vec![vec![V::Int(HEAP), t("heap"), t("t")]],
            // the session's settings (`SHOW`), and the compiled-in limits JDBC asks for
            "pg_settings" => super::SETTINGS
                .iter()
                .map(|&(name, value)| (name, value.to_string()))
                .chain([("server_version", super::server_version()), ("max_index_keys", "32".to_string())])
                .map(|(name, value)| vec![t(name), V::Text(value), t("string"), t("default")])
                .collect(),
            "pg_database" => vec![vec![
                V::Int(1),
                t("promflow"),
                V::Int(10),
                V::Int(6),
                V::Bool(true),
                V::Bool(false),
                t("c"),
                t("C.UTF-8"),
                t("C.UTF-8"),
                V::Null,
                V::Null,
                V::Int(DEFAULT_TABLESPACE),
            ]],
            "pg_tablespace" => [(DEFAULT_TABLESPACE, "pg_default"), (DEFAULT_TABLESPACE + 1, "pg_global")]
                .into_iter()
                .map(|(oid, n)| vec![V::Int(oid), t(n), V::Int(10), V::Null, V::Null])
                .collect(),
            // one role, promflow's, which may do anything
            "pg_roles" | "pg_user" => {
                let yes = V::Bool(true);
                vec![vec![
                    V::Int(10),
                    t(ROLE),
                    t(ROLE),
                    yes.clone(),
                    yes.clone(),
                    yes.clone(),
                    yes.clone(),
                    yes,
                    V::Int(-1),
                    V::Null,
                    V::Bool(false),
                    V::Bool(false),
                ]]
            }
            _ => Vec::new(),
        };
        Ok(Relation { columns, rows })
    }

    /// The name of the table with `oid` (`regclass` output), or the oid itself.
    pub(super) fn table_name(&mut self, oid: &V) -> Result<V, ExecError> {
        let Some(n) = oid.number() else { return Ok(V::Null) };
        let table = self.tables(false)?.iter().find(|t| t.oid as f64 == n).map(|t| (t.oid, t.name.clone()));
        Ok(table.map_or_else(|| V::Int(n as i64), |(oid, name)| V::Class(oid, name)))
    }
}
