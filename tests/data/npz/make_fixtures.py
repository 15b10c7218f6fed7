#!/usr/bin/env python3
"""Writes the npz test fixtures with numpy itself (run by hand, numpy >= 1.23;
the files are checked in, so the tests need neither Python nor numpy):

    python3 tests/data/npz/make_fixtures.py

numpy.npz             numpy.savez: every dtype the plugin reads, a 0-d and an
                      empty array, Fortran-order and big-endian arrays, a
                      non-ASCII name
numpy-compressed.npz  numpy.savez_compressed of the same arrays
versions.npz          members with NPY 2.0 and 3.0 headers (write_array)
empty.npz             numpy.savez of nothing: only an end-of-directory record
hessian.npy           numpy.save of one float32 vector (a lone .npy file)

tests/test_npz.c checks the values with the same formulas as arrays() below.
"""
import io
import os
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def arrays():
    k = np.arange
    return {
        'w.f32': (k(12) * 0.5 - 1).astype('<f4').reshape(3, 4),
        'w.f16': (k(6) - 2).astype('<f2').reshape(2, 3),
        'w.f64': np.array([1.5, -2.25, 1e300], dtype='<f8'),
        'i8': (k(4) - 2).astype('|i1'),
        'u8': (k(4) + 250).astype('|u1'),
        'i16': (k(3) * -300).astype('<i2'),
        'u16': (k(3) + 65000).astype('<u2'),
        'i32': (k(3) * -100000).astype('<i4'),
        'u32': (k(3) + 4000000000).astype('<u4'),
        'i64': (k(2) * -10**12).astype('<i8'),
        'u64': np.array([2**63, 2**64 - 1], dtype='<u8'),
        'mask': k(5) % 2 == 0,
        'scalar': np.array(3.5, dtype='<f4'),
        'empty': np.zeros((0, 4), dtype='<f4'),
        # Stored in Fortran order: element (i, j) of a 2x3 is i*3 + j.
        'fortran2d': np.asfortranarray(k(6).astype('<f4').reshape(2, 3)),
        'fortran3d': np.asfortranarray(k(24).astype('<i4').reshape(2, 3, 4)),
        'big.f32': (k(5) * 0.5).astype('>f4'),
        'big.i64': (k(3) - 1).astype('>i8'),
        'big.fortran': np.asfortranarray((k(6) + 1).astype('>u2').reshape(3, 2)),
        'model.layers.0.mlp.down_proj.weight': (k(8) * 0.125).astype('<f4').reshape(2, 4),
        'caf\u00e9': np.ones(2, dtype='<f4'),
    }


def npy_bytes(arr, version):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version)
    return buf.getvalue()


def main():
    a = arrays()
    assert a['fortran2d'].flags.f_contiguous and not a['fortran2d'].flags.c_contiguous
    np.savez(os.path.join(HERE, 'numpy.npz'), **a)
    np.savez_compressed(os.path.join(HERE, 'numpy-compressed.npz'), **a)
    np.savez(os.path.join(HERE, 'empty.npz'))
    np.save(os.path.join(HERE, 'hessian.npy'), (np.arange(8) + 1).astype('<f4'))
    with zipfile.ZipFile(os.path.join(HERE, 'versions.npz'), 'w',
                         compression=zipfile.ZIP_STORED) as z:
        z.writestr('v2.npy', npy_bytes((np.arange(6) * 2).astype('<i2').reshape(2, 3), (2, 0)))
        z.writestr('v3.npy', npy_bytes(np.asfortranarray(
            np.arange(6).astype('>f8').reshape(3, 2)), (3, 0)))
    # Check what was written.
    with np.load(os.path.join(HERE, 'numpy.npz')) as f:
        assert sorted(f.files) == sorted(a), f.files
        for name, want in a.items():
            assert f[name].dtype == want.dtype and np.array_equal(f[name], want), name


if __name__ == '__main__':
    main()
