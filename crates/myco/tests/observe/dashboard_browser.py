#!/usr/bin/env python3
"""The dashboard in headless Chromium (driven by the Rust test
dashboard_in_chromium_shows_the_mesh_live_and_scales).

Usage: dashboard_browser.py API_URL SCREENSHOT VICTIM_PID TOKEN
Checks from the rendered DOM that the nodes, the jobs and their instances
appear; that the agent VICTIM_PID, killed meanwhile, turns "down" in its
row without a reload; and that the scale button (count, then the token,
asked once) scales hello to 3 and the stop button stops solo. Prints what failed and exits 1."""
import os, signal, sys, time
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

url, shot, victim, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def fail(msg):
    print(msg)
    sys.exit(1)


def until(what, secs, probe):
    end = time.time() + secs
    while time.time() < end:
        if probe():
            return
        time.sleep(0.2)
    fail(f"timed out after {secs} s waiting for {what}; page text:\n{body()}")


o = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
    o.add_argument(a)
o.binary_location = "/usr/bin/chromium"
d = webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=o)
body = lambda: d.find_element(By.TAG_NAME, "body").text


def click(css):
    """Clicks the element; the page re-renders as events arrive, so an
    element found may be replaced before the click lands: find it again."""
    for _ in range(20):
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    fail(f"could not click {css}")


def _alert_present():
    try:
        d.switch_to.alert
        return True
    except Exception:
        return False


def row(tbody, first_cell):
    """The cells' text of the row whose first cell starts with first_cell.
    Read in one script: the page re-renders its tables as events arrive."""
    return d.execute_script("""
        for (const tr of document.querySelectorAll('#' + arguments[0] + ' tr')) {
            const c = [...tr.querySelectorAll('td')].map(td => td.innerText.trim());
            if (c.length && c[0].split(' ')[0] === arguments[1]) return c;
        }
        return null;""", tbody, first_cell)


def ready_instances():
    return d.execute_script(
        "return [...document.querySelectorAll('#instances tr')].filter(r => r.innerText.includes('ready')).length")


try:
    d.get(url)
    until("three nodes, both jobs and three ready instances", 15, lambda: all(
        row("nodes", n) for n in ("n1", "n2", "n3")) and row("jobs", "hello") and row("jobs", "solo")
        and ready_instances() == 3)
    order = d.execute_script("return [...document.querySelectorAll('#nodes tr')].map(r => r.cells[0].innerText.split(' ')[0])")
    if order != ["n1", "n2", "n3"]:
        fail(f"nodes not listed by name: {order}")
    if row("jobs", "hello")[1] != "2 / 2":
        fail(f"hello shows {row('jobs', 'hello')}, want 2 / 2 ready")
    # Live use from every node (each measures its own; the page's node
    # asks the others), and the allocation of the instances running.
    until("every node's live CPU and memory use", 15, lambda: all(
        "cores" in row("nodes", n)[4] and "MiB" in row("nodes", n)[5] for n in ("n1", "n2", "n3")))
    alloc = [row("nodes", n)[6] for n in ("n1", "n2", "n3")]
    if all(a.startswith("0.00 /") for a in alloc):
        fail(f"no node shows cpu allocated to its instances: {alloc}")
    if row("jobs", "hello")[4] != "allowed":
        fail(f"hello's duplicate mode not shown: {row('jobs', 'hello')}")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    d.save_screenshot(shot)
    print("screenshot:", shot)

    # On a phone: the page fits the screen's width (wide tables scroll in
    # their own box), and a screenshot shows it.
    d.set_window_size(390, 844)
    until("the phone layout", 5, lambda: d.execute_script("return window.innerWidth") <= 390)
    over = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    if over > 1:
        fail(f"the page is {over} px wider than a phone's screen")
    phone = shot.replace(".png", "-phone.png")
    d.save_screenshot(phone)
    print("phone screenshot:", phone)
    d.set_window_size(1400, 1000)

    # With the keyboard alone: Tab reaches the job buttons and the
    # instance rows, focus is visible, Enter on a row opens its log tail,
    # Escape closes it.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    d.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    reached, outline = set(), True
    for _ in range(60):
        ActionChains(d).send_keys(Keys.TAB).perform()
        info = d.execute_script("""const e = document.activeElement, cs = getComputedStyle(e);
            return [e.tagName, e.dataset.scale ? 'scale' : e.dataset.inst ? 'instance' : '',
                    cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0]""")
        if info[1]:
            reached.add(info[1])
            outline = outline and info[2]
        if reached == {"scale", "instance"}:
            break
    if reached != {"scale", "instance"}:
        fail(f"Tab reached only {reached} of the scale buttons and instance rows")
    if not outline:
        fail("keyboard focus is not visible (no outline)")
    ActionChains(d).send_keys(Keys.ENTER).perform()
    until("the log tail opened from the keyboard", 5,
          lambda: d.execute_script("return document.getElementById('logs').className") == "on")
    ActionChains(d).send_keys(Keys.ESCAPE).perform()
    until("the log tail closed by Escape", 5,
          lambda: d.execute_script("return document.getElementById('logs').className") == "")
    print("keyboard: buttons and rows reachable, focus visible, Enter opens logs")

    # A node killed while the page is open turns down, with no reload.
    d.execute_script("window.__same_page = 1")
    t0 = time.time()
    os.kill(victim, signal.SIGKILL)
    until("n3 shown down", 10, lambda: row("nodes", "n3") and row("nodes", "n3")[1] == "down")
    if d.execute_script("return window.__same_page") != 1:
        fail("the page reloaded")
    print(f"n3 shown down {time.time() - t0:.1f} s after the kill")

    # Scale from the page: the count, then the token (asked once per tab).
    click('button[data-scale="hello"]')
    d.switch_to.alert.send_keys("3")
    d.switch_to.alert.accept()
    until("the token prompt", 5, lambda: _alert_present())
    d.switch_to.alert.send_keys(token)
    d.switch_to.alert.accept()
    until("hello desired 3 on the page", 15, lambda: (row("jobs", "hello") or ["", ""])[1].endswith("/ 3"))
    if d.execute_script("return sessionStorage.getItem('myco-token')") != token:
        fail("the token is not kept for the tab")
    print("scaled hello to 3 from the page")

    # Stop from the page: a confirmation, no second token prompt; a
    # stopped job is removed, so it leaves the table.
    click('button[data-stop="solo"]')
    d.switch_to.alert.accept()
    until("solo gone from the jobs table", 15, lambda: row("jobs", "solo") is None)
    print("stopped solo from the page")
finally:
    d.quit()
