// pgjdbc (Debian's libpostgresql-jdbc-java) against sextant: prepared
// statements with setTimestamp, setString, setLong, setDouble, setBoolean and
// NULLs; enough executions that pgjdbc switches to server-prepared (named)
// statements; ResultSet getters; DatabaseMetaData. Run by
// tests/python/test_jdbc.py with the server's port; exits non-zero (with the
// reason) on the first wrong answer.

import java.sql.*;
import java.time.Instant;
import java.time.OffsetDateTime;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/sextant";
        try (Connection c = DriverManager.getConnection(url, "jdbc", "")) {
            DatabaseMetaData md = c.getMetaData();
            check(md.getDatabaseProductName().equals("PostgreSQL"), "product name " + md.getDatabaseProductName());
            check(md.getDatabaseProductVersion().startsWith("16.6"), "version " + md.getDatabaseProductVersion());
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jt (time TIMESTAMP NOT NULL, host TEXT, n BIGINT, v DOUBLE PRECISION, ok BOOLEAN)");
            }
            Instant t0 = Instant.parse("2024-01-01T00:00:00Z");
            // Seven executions: pgjdbc prepares on the server from the fifth.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jt (time, host, n, v, ok) VALUES (?, ?, ?, ?, ?)")) {
                for (int i = 0; i < 7; i++) {
                    ps.setTimestamp(1, Timestamp.from(t0.plusSeconds(i)));
                    if (i == 3) ps.setNull(2, Types.VARCHAR); else ps.setString(2, "h" + i);
                    ps.setLong(3, i * 10L);
                    if (i == 4) ps.setNull(4, Types.DOUBLE); else ps.setDouble(4, i * 1.5);
                    ps.setBoolean(5, i % 2 == 0);
                    check(ps.executeUpdate() == 1, "insert " + i);
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT time, host, n, v, ok FROM jt WHERE n >= ? AND host IS DISTINCT FROM ? ORDER BY time")) {
                for (int round = 0; round < 6; round++) {
                    ps.setLong(1, 20L);
                    ps.setString(2, "h5");
                    try (ResultSet rs = ps.executeQuery()) {
                        int rows = 0;
                        while (rs.next()) {
                            long n = rs.getLong(3);
                            check(rs.getTimestamp(1).toInstant().equals(t0.plusSeconds(n / 10)), "time of row n=" + n);
                            if (n == 30) {
                                check(rs.getString(2) == null && rs.wasNull(), "NULL host");
                            } else {
                                check(("h" + n / 10).equals(rs.getString(2)), "host of row n=" + n);
                            }
                            if (n == 40) {
                                rs.getDouble(4);
                                check(rs.wasNull(), "NULL v");
                            } else {
                                check(rs.getDouble(4) == (n / 10) * 1.5, "v of row n=" + n);
                            }
                            check(rs.getBoolean(5) == ((n / 10) % 2 == 0), "ok of row n=" + n);
                            rows++;
                        }
                        check(rows == 4, "round " + round + ": " + rows + " rows");
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM jt WHERE time < ?")) {
                ps.setObject(1, OffsetDateTime.parse("2024-01-01T00:00:03Z"));
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    check(rs.getLong(1) == 3, "count before 00:00:03");
                }
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT sum(n), avg(v) FROM jt")) {
                rs.next();
                check(rs.getLong(1) == 210, "sum");
            }
            try (ResultSet rs = md.getTables(null, "public", "%", new String[]{"TABLE"})) {
                check(rs.next() && rs.getString("TABLE_NAME").equals("jt"), "getTables");
            }
            StringBuilder columns = new StringBuilder();
            try (ResultSet rs = md.getColumns(null, "public", "jt", null)) {
                while (rs.next()) columns.append(rs.getString("COLUMN_NAME")).append(':').append(rs.getString("TYPE_NAME")).append(' ');
            }
            check(columns.toString().equals("time:timestamptz host:text n:int8 v:float8 ok:bool "), "getColumns " + columns);
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT * FROM nope");
                check(false, "no error for an unknown table");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
            }
            System.out.println("jdbc ok: 7 inserts, 6 prepared queries, metadata, 42P01");
        }
    }
}
