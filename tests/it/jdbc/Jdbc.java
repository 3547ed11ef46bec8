// What Metabase and other JDBC tools ask of a PostgreSQL server, through Debian's pgjdbc:
// the database metadata they reflect tables and columns by, a plain query, and a prepared
// statement run past pgjdbc's prepareThreshold (then prepared on the server and read in
// binary). Prints one `key=value` line per answer for tests/it/sql.rs to compare.
// Run: java -cp /usr/share/java/postgresql.jar Jdbc.java PORT EPOCH_MS
import java.sql.*;
import java.util.*;

public class Jdbc {
    static void rows(String key, ResultSet rs, String... columns) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            List<String> cells = new ArrayList<>();
            for (String c : columns) cells.add(String.valueOf(rs.getObject(c)));
            out.add(String.join(",", cells));
        }
        System.out.println(key + "=" + String.join(";", out));
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/promflow?user=promflow&connectTimeout=10&socketTimeout=60";
        long from = Long.parseLong(args[1]);
        try (Connection conn = DriverManager.getConnection(url)) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("product=" + md.getDatabaseProductName() + " " + md.getDatabaseMajorVersion());
            rows("schemas", md.getSchemas(), "TABLE_SCHEM");
            rows("tables", md.getTables(null, "public", "m%", new String[] {"TABLE", "VIEW"}), "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE");
            rows("columns", md.getColumns(null, "public", "m", "%"), "COLUMN_NAME", "TYPE_NAME", "DATA_TYPE", "NULLABLE", "ORDINAL_POSITION");
            rows("primary_keys", md.getPrimaryKeys(null, "public", "m"), "COLUMN_NAME");
            rows("imported_keys", md.getImportedKeys(null, "public", "m"), "FKCOLUMN_NAME");
            rows("indexes", md.getIndexInfo(null, "public", "m", false, true), "INDEX_NAME");
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT job, count(*) AS n, max(value) AS top FROM m WHERE job IS NOT NULL GROUP BY job ORDER BY job")) {
                rows("query", rs, "job", "n", "top");
            }
            List<String> prepared = new ArrayList<>();
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT instance, ts, value, round(value::numeric, 1) AS r, ts::date AS d FROM m WHERE job = ? AND ts >= ? ORDER BY instance, ts LIMIT 1")) {
                for (int i = 0; i < 7; i++) {
                    ps.setString(1, "a");
                    ps.setTimestamp(2, new Timestamp(from));
                    try (ResultSet rs = ps.executeQuery()) {
                        if (!rs.next()) throw new SQLException("no row");
                        prepared.add(rs.getString("instance") + "," + rs.getTimestamp("ts").getTime() + "," + rs.getDouble("value")
                                + "," + rs.getBigDecimal("r") + "," + rs.getDate("d").toLocalDate());
                    }
                }
            }
            // every run answers alike, text (the first five) or binary (after)
            System.out.println("prepared=" + String.join(";", new LinkedHashSet<>(prepared)));
        }
    }
}
