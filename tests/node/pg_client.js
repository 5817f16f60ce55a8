// node-postgres (npm `pg`) against sextant: parameters (text protocol),
// named prepared statements, NULLs, result types, errors with SQLSTATE.
// Run by tests/python/test_node_pg.py with the server's port; exits
// non-zero (with the reason) on the first wrong answer.
const assert = require('assert/strict');
const { Client } = require('pg');

(async () => {
  const c = new Client({ host: '127.0.0.1', port: parseInt(process.argv[2], 10), user: 'node', database: 'sextant' });
  await c.connect();
  const version = (await c.query('SELECT version()')).rows[0].version;
  assert.ok(version.startsWith('PostgreSQL 16.6 (Sextant'), version);
  await c.query('CREATE TABLE nt (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE PRECISION, n BIGINT, ok BOOLEAN)');
  const ins = await c.query('INSERT INTO nt VALUES ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)',
    [new Date('2024-01-01T00:00:00Z'), 'a', 1.5, 10, true, new Date('2024-01-01T00:00:01Z'), null, null, null, false]);
  assert.equal(ins.command, 'INSERT');
  assert.equal(ins.rowCount, 2);
  const q = await c.query('SELECT time, host, v, n, ok FROM nt WHERE time >= $1 ORDER BY time', [new Date('2024-01-01T00:00:00Z')]);
  assert.deepEqual(q.fields.map((f) => [f.name, f.dataTypeID]), [['time', 1184], ['host', 25], ['v', 701], ['n', 20], ['ok', 16]]);
  assert.equal(q.rows[0].time.toISOString(), '2024-01-01T00:00:00.000Z');
  assert.deepEqual([q.rows[0].host, q.rows[0].v, q.rows[0].n, q.rows[0].ok], ['a', 1.5, '10', true]);
  assert.deepEqual([q.rows[1].host, q.rows[1].v, q.rows[1].n, q.rows[1].ok], [null, null, null, false]);
  for (const [host, expected] of [['a', '1'], ['b', '0'], ['a', '1']]) {
    const r = await c.query({ name: 'by-host', text: 'SELECT count(*) AS n FROM nt WHERE host = $1', values: [host] });
    assert.equal(r.rows[0].n, expected);
  }
  await assert.rejects(c.query('SELEC 1'), (e) => e.code === '42601');
  await assert.rejects(c.query('SELECT * FROM nope'), (e) => e.code === '42P01');
  assert.deepEqual((await c.query('SELECT 1 AS one')).rows, [{ one: '1' }]);
  await c.end();
  console.log('node-postgres ok');
})().catch((e) => { console.error('FAILED:', e); process.exit(1); });
