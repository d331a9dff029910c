// Test peer for xnatio's zip bodies: reads a zip from stdin with java.util.zip.ZipInputStream,
// the reader XNAT's import service uses, and prints one line per entry:
// name, bytes read, CRC-32 of those bytes (hex), method (0 stored, 8 deflated).
// Any exception (a descriptor the reader refuses, a CRC or size mismatch) exits with status 1.
import java.io.BufferedInputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;

public final class ZipCheck {
    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        byte[] buf = new byte[1 << 16];
        try (ZipInputStream zin = new ZipInputStream(new BufferedInputStream(System.in, 1 << 16))) {
            ZipEntry e;
            while ((e = zin.getNextEntry()) != null) {
                CRC32 crc = new CRC32();
                long n = 0;
                int r;
                while ((r = zin.read(buf)) > 0) {
                    crc.update(buf, 0, r);
                    n += r;
                }
                out.printf("%s\t%d\t%08x\t%d%n", e.getName(), n, crc.getValue(), e.getMethod());
            }
        } catch (Exception ex) {
            System.err.println(ex);
            System.exit(1);
        }
    }
}
